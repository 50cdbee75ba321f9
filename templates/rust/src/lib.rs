//! {{name}}: a Switchyard plugin (contract 0.2.0), written in Rust.
//!
//! For each `chat.ended` it sends the chat to the CRM at the queue's `url`
//! (a POST with the message id as `Idempotency-Key`, so a redelivery does
//! not create a second record), counts the site's chats in key-value state,
//! and publishes `crm.synced`. The CRM's answer decides: 2xx done; 408,
//! 429 and 5xx retried (after `Retry-After`); any other status rejected.

use chat_events::Chat;
use serde_json::{Value, json};
use switchyard_plugin::{Failure, Handler, Message, config, http, kv, log, publish};

struct Plugin;

impl Handler for Plugin {
    fn handle(message: Message) -> Result<(), Failure> {
        if !message.message_type.eq_ignore_ascii_case("chat.ended") {
            return Err(Failure::reject(format!(
                "{} is not a chat.ended",
                message.message_type
            )));
        }
        let chat: Chat = message.json()?;
        let url = config::required("url")?;
        let answer = http::Request::post(&url)
            .idempotency_key(&message.id)
            .json(&crm_record(&message.id, &chat))
            .send()
            .map_err(|e| e.into_failure("sending the chat to the CRM"))?;
        http::check(answer, "sending the chat to the CRM")?;
        let chats = kv::increment("chats", &chat.site_id.to_string(), 1)
            .map_err(|e| kv::into_failure(e, "counting the site's chats"))?;
        log::info(&format!("chat {} of site {} sent ({chats} so far)", chat.chat_guid, chat.site_id));
        publish::publish(
            "crm.synced",
            &json!({ "ChatGuid": chat.chat_guid, "SiteId": chat.site_id, "Chats": chats }),
            &[],
        )
        .map_err(Failure::retry)?;
        Ok(())
    }
}

/// What the CRM is sent for a chat.
pub fn crm_record(message_id: &str, chat: &Chat) -> Value {
    json!({
        "external_id": message_id,
        "chat": chat.chat_guid,
        "site": chat.site_id,
        "visitor": { "name": chat.pre_chat_name, "email": chat.pre_chat_email },
        "messages": chat.messages.len(),
        "started": chat.start,
        "ended": chat.end,
    })
}

switchyard_plugin::export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crm_record_names_the_chat_and_the_visitor() {
        let chat: Chat = serde_json::from_str(include_str!("../event.json")).unwrap();
        let record = crm_record("m-1", &chat);
        assert_eq!(record["external_id"], "m-1");
        assert_eq!(record["chat"], "c-8f2a");
        assert_eq!(record["visitor"]["email"], "ada@example.com");
        assert_eq!(record["messages"], 1);
    }
}
