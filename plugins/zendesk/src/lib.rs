//! The Zendesk queue's handler: a Zendesk ticket for each ended chat and
//! offline message, created once.
//!
//! It speaks Zendesk's Tickets API with an API token
//! (`Authorization: Basic <email>/token:<api_token>`). Each ticket carries
//! the message id as its `external_id`; before creating one, the handler
//! lists the tickets with that external id
//! (`GET /api/v2/tickets.json?external_id=<id>`), so a redelivery (the host
//! died after Zendesk created the ticket and before the message was
//! acknowledged) finds the ticket instead of creating a second one. Then
//! `POST /api/v2/tickets.json` with
//! `{"ticket": {"subject", "comment": {"body"}, "requester", "external_id",
//! "tags"}}`.
//!
//! Answers: 2xx done; 408, 429, 5xx and connection failures retried (after
//! `Retry-After`, which Zendesk sends with its 429s); other statuses
//! reject with the status and the start of the answer.
//!
//! Config: `base_url` (`https://<subdomain>.zendesk.com`), `email`,
//! `api_token` (a secret: `{ env = "..." }`).

use chat_events::Payload;
use serde_json::{Value, json};
use switchyard_plugin::http::{self, Request};
use switchyard_plugin::{Failure, Handler, Message, config, log};

struct Zendesk;

/// The ticket for a message, or `None` for a type Zendesk does not take.
fn ticket(message: &Message, payload: &Payload) -> Option<Value> {
    let (subject, body, name, email, tag) = match payload {
        Payload::ChatEnded(chat) => (
            chat.subject(),
            chat.transcript(),
            chat.visitor_name(),
            chat.visitor_email(),
            "chat",
        ),
        Payload::OfflineMessageSubmitted(m) => (
            m.subject(),
            m.description(),
            m.visitor_name(),
            m.visitor_email(),
            "offline-message",
        ),
        _ => return None,
    };
    let mut ticket = json!({
        "subject": subject,
        "comment": { "body": body },
        "external_id": message.id,
        "tags": ["switchyard", tag, format!("site-{}", payload.site_id())],
    });
    if let Some(email) = email {
        ticket["requester"] = json!({ "name": name.unwrap_or(email), "email": email });
    }
    Some(json!({ "ticket": ticket }))
}

impl Handler for Zendesk {
    fn handle(message: Message) -> Result<(), Failure> {
        let payload = Payload::parse(&message.message_type, &message.body)
            .map_err(|e| Failure::reject(e.to_string()))?;
        let Some(ticket) = ticket(&message, &payload) else {
            return Err(Failure::reject(format!(
                "the Zendesk queue does not handle {}",
                message.message_type
            )));
        };
        let base = config::required("base_url")?;
        let base = base.trim_end_matches('/');
        let email = config::required("email")?;
        let token = config::required("api_token")?;
        let user = format!("{email}/token");

        let found = Request::get(&format!(
            "{base}/api/v2/tickets.json?external_id={}",
            http::encode(&message.id)
        ))
        .basic_auth(&user, &token)
        .send()
        .map_err(|e| e.into_failure("looking up the ticket in Zendesk"))?;
        let found = http::check(found, "looking up the ticket in Zendesk")?;
        let existing: Value = found.json().unwrap_or_default();
        if let Some(t) = existing["tickets"].as_array().and_then(|t| t.first()) {
            log::info(&format!(
                "zendesk: ticket #{} already exists for {}",
                t["id"], message.id
            ));
            return Ok(());
        }

        let created = Request::post(&format!("{base}/api/v2/tickets.json"))
            .basic_auth(&user, &token)
            .json(&ticket)
            .send()
            .map_err(|e| e.into_failure("creating the Zendesk ticket"))?;
        let created = http::check(created, "creating the Zendesk ticket")?;
        let created: Value = created.json().unwrap_or_default();
        log::info(&format!(
            "zendesk: created ticket #{} for {}",
            created["ticket"]["id"],
            payload.summary()
        ));
        Ok(())
    }
}

switchyard_plugin::export!(Zendesk);
