//! Test plugin: takes `ms` milliseconds (from its config; 0 if unset), then
//! succeeds. With `ms = 0` it is a no-op handler.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::{config, log};

struct Sleep;

impl Guest for Sleep {
    fn handle(message: Message) -> Result<(), Failure> {
        let ms: u64 = config::get("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        log::log(
            log::Level::Debug,
            &format!("handled {} after {ms} ms", message.id),
        );
        Ok(())
    }
}

export!(Sleep);
