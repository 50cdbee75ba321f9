//! Test plugin: every attempt fails transiently. With `delay_ms` in its
//! config it asks for that delay before the next attempt.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::types::Retry;
use switchyard::plugin::{config, log};

struct AlwaysRetry;

impl Guest for AlwaysRetry {
    fn handle(message: Message) -> Result<(), Failure> {
        let delay_ms = config::get("delay_ms").and_then(|d| d.parse().ok());
        log::log(
            log::Level::Info,
            &format!(
                "attempt {} of {} fails on purpose",
                message.attempt, message.id
            ),
        );
        Err(Failure::Retry(Retry {
            reason: format!("upstream unavailable (attempt {})", message.attempt),
            delay_ms,
        }))
    }
}

export!(AlwaysRetry);
