//! The WebHook queue's handler: posts each chat event to the site's
//! webhook, signed, once per message id.
//!
//! The request is `POST <url>` with the JSON event
//! `{"id", "type", "site_id", "data"}` (`data`: the producer's body as it
//! was sent) and these headers:
//!
//! - `Switchyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the
//!   HMAC taken under `signing_secret` over `<t>.<body>`;
//! - `Idempotency-Key: <message id>`: the same on every redelivery;
//! - `Switchyard-Event: <type>`, `Switchyard-Attempt: <n>`, and the
//!   message's `traceparent` if it has one.
//!
//! A 2xx answer is done; 408, 429 and 5xx (and a connection that fails)
//! are retried, after `Retry-After` if given; any other status rejects the
//! message with the status and the start of the answer. A payload that does
//! not parse is rejected.
//!
//! Config: `url`, where every site's events go, and `site_urls`, a table of
//! site id to that site's own URL (a site in neither has no webhook: its
//! events are acknowledged without a request); `signing_secret` (a secret:
//! `{ env = "..." }`).

use std::time::{SystemTime, UNIX_EPOCH};

use chat_events::Payload;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use switchyard_plugin::http::{self, Request};
use switchyard_plugin::{Failure, Handler, Message, config, log};

struct WebHook;

/// Where a site's events go: its own URL, else the queue's `url`; `None`
/// for a site with no webhook.
fn destination(site: i32) -> Result<Option<String>, Failure> {
    let sites: Option<serde_json::Value> =
        config::get("site_urls").and_then(|t| serde_json::from_str(&t).ok());
    if let Some(url) = sites.as_ref().and_then(|s| s[site.to_string()].as_str()) {
        return Ok(Some(url.to_owned()));
    }
    match config::get("url").filter(|u| !u.trim().is_empty()) {
        Some(url) => Ok(Some(url)),
        None if sites.is_some() => Ok(None),
        None => config::required("url").map(Some),
    }
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

impl Handler for WebHook {
    fn handle(message: Message) -> Result<(), Failure> {
        let payload = Payload::parse(&message.message_type, &message.body)
            .map_err(|e| Failure::reject(e.to_string()))?;
        let Some(url) = destination(payload.site_id())? else {
            log::debug(&format!("webhook: site {} has none", payload.site_id()));
            return Ok(());
        };
        let secret = config::required("signing_secret")?;
        let data: serde_json::Value = serde_json::from_str(&message.body)
            .map_err(|e| Failure::reject(format!("the body is not JSON: {e}")))?;
        let event_type = message.message_type.to_ascii_lowercase();
        let body = json!({
            "id": message.id,
            "type": event_type,
            "site_id": payload.site_id(),
            "data": data,
        })
        .to_string();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut request = Request::post(&url)
            .header("switchyard-signature", signature(&secret, now, &body))
            .idempotency_key(&message.id)
            .header("switchyard-event", &event_type)
            .header("switchyard-attempt", message.attempt.to_string())
            .json_text(body);
        if let Some(trace) = message.header("traceparent") {
            request = request.header("traceparent", trace);
        }
        let response = request
            .send()
            .map_err(|e| e.into_failure("posting to the webhook"))?;
        let response = http::check(response, "the webhook")?;
        log::info(&format!(
            "webhook: {} delivered (HTTP {})",
            payload.summary(),
            response.status
        ));
        Ok(())
    }
}

switchyard_plugin::export!(WebHook);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_an_hmac_of_the_timestamp_and_body() {
        // HMAC-SHA256 under "key" of "1.{}", computed with Python's hmac.
        assert_eq!(
            signature("key", 1, "{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
