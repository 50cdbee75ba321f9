//! The Ticket queue's handler: ended chats, wrap-ups and offline messages
//! to the chat product's ticket service.
//!
//! The service takes `POST <url>` (its `/api/tickets`) with
//! `Authorization: Bearer <api_token>`, `Idempotency-Key: <message id>`
//! and a JSON ticket event:
//!
//! - `{"type": "chat", "site_id", "chat_guid", "ticket_id" (the ticket the
//!   chat continues, if any), "new_ticket", "subject", "description" (the
//!   transcript), "requester": {"name", "email"}}` for `chat.ended`;
//! - `{"type": "offline_message", "site_id", "subject", "description",
//!   "requester"}` for `offlinemessage.submitted`;
//! - `{"type": "wrapup", "site_id", "chat_guid", "agent_id",
//!   "category_id", "categories", "comment"}` for `chat.wrapup.submitted`.
//!
//! It answers 201 with the ticket for a new key, and 200 with the same
//! ticket (and `Idempotent-Replayed: true`) for a key it has seen: a
//! redelivery creates nothing. 2xx is done; 408, 429, 5xx and connection
//! failures are retried (after `Retry-After` if given); other statuses
//! reject with the status and the start of the answer.
//!
//! Config: `url`, `api_token` (a secret: `{ env = "..." }`).

use chat_events::Payload;
use serde_json::{Value, json};
use switchyard_plugin::http::{self, Request};
use switchyard_plugin::{Failure, Handler, Message, config, log};

struct Ticket;

fn requester(name: Option<&str>, email: Option<&str>) -> Value {
    json!({ "name": name, "email": email })
}

/// The ticket event for a message, or `None` for a type the service does
/// not take.
fn event(payload: &Payload) -> Option<Value> {
    Some(match payload {
        Payload::ChatEnded(chat) => json!({
            "type": "chat",
            "site_id": chat.site_id,
            "chat_guid": chat.chat_guid,
            "ticket_id": chat.ticket_id.as_deref().filter(|t| !t.is_empty()),
            "new_ticket": chat.if_new_ticket.unwrap_or(false),
            "subject": chat.subject(),
            "description": chat.transcript(),
            "requester": requester(chat.visitor_name(), chat.visitor_email()),
        }),
        Payload::OfflineMessageSubmitted(m) => json!({
            "type": "offline_message",
            "site_id": m.site_id,
            "subject": m.subject(),
            "description": m.description(),
            "requester": requester(m.visitor_name(), m.visitor_email()),
        }),
        Payload::WrapupSubmitted(w) => json!({
            "type": "wrapup",
            "site_id": w.site_id,
            "chat_guid": w.chat,
            "agent_id": w.agent_id,
            "category_id": w.category_id,
            "categories": w.category_list,
            "comment": w.comment,
        }),
        _ => return None,
    })
}

impl Handler for Ticket {
    fn handle(message: Message) -> Result<(), Failure> {
        let payload = Payload::parse(&message.message_type, &message.body)
            .map_err(|e| Failure::reject(e.to_string()))?;
        let Some(event) = event(&payload) else {
            return Err(Failure::reject(format!(
                "the Ticket queue does not handle {}",
                message.message_type
            )));
        };
        let url = config::required("url")?;
        let token = config::required("api_token")?;
        let response = Request::post(&url)
            .bearer(&token)
            .idempotency_key(&message.id)
            .json(&event)
            .send()
            .map_err(|e| e.into_failure("sending to the ticket service"))?;
        let response = http::check(response, "the ticket service")?;
        let answer: Value = response.json().unwrap_or_default();
        let replayed = response.header("idempotent-replayed") == Some("true");
        log::info(&format!(
            "ticket: {} {} for {}",
            if replayed { "already had" } else { "sent" },
            answer["ticket"]["id"],
            payload.summary()
        ));
        Ok(())
    }
}

switchyard_plugin::export!(Ticket);
