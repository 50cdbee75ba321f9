//! The WebHook queue's handler: posts chat events to the site's webhook.
//!
//! It checks the payload of each message type it is given (rejecting what
//! does not parse), builds the JSON the webhook receives, and, until the host
//! grants outbound HTTP, logs the request it would send.
//!
//! Config: `url` (required; without it every attempt is retried, since the
//! message is fine and the operator's fix is what is missing), `secret`
//! (optional, named in the log only as present or not).

wit_bindgen::generate!({ path: "../../wit/versions/0.1.0", world: "plugin" });

use chat_events::Payload;
use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::types::Retry;
use switchyard::plugin::{config, log};

struct WebHook;

impl Guest for WebHook {
    fn handle(message: Message) -> Result<(), Failure> {
        let payload = Payload::parse(&message.message_type, &message.body)
            .map_err(|e| Failure::Reject(e.to_string()))?;
        let Some(url) = config::get("url").filter(|u| !u.is_empty()) else {
            return Err(Failure::Retry(Retry {
                reason: "config key `url` is not set for this queue".into(),
                delay_ms: Some(60_000),
            }));
        };
        let data: serde_json::Value = serde_json::from_str(&message.body)
            .map_err(|e| Failure::Reject(format!("body is not JSON: {e}")))?;
        let request = serde_json::json!({
            "event": message.message_type.to_ascii_lowercase(),
            "id": message.id,
            "siteId": payload.site_id(),
            "data": data,
        })
        .to_string();
        let signed = config::get("secret").is_some_and(|s| !s.is_empty());
        log::log(
            log::Level::Info,
            &format!(
                "POST {url} ({} bytes, signed: {signed}, idempotency key {}): {}",
                request.len(),
                message.id,
                payload.summary()
            ),
        );
        Ok(())
    }
}

export!(WebHook);
