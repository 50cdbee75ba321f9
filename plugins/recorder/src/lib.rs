//! Test plugin: records every handling in the host's log, and succeeds.
//! At its start it logs `lease begin id=<message id> queue=<queue>
//! at=<µs>`; with `ms` in its config it then takes that long; at its end it
//! logs `record id=<message id> queue=<queue> attempt=<n> begin=<µs>
//! end=<µs>` (µs since the Unix epoch). The chaos tests read these lines
//! from the logs of every host they ran, outside the hosts, to count what
//! was handled and how often, and to check that no message was handled by
//! two live hosts at once.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::{config, log};

struct Recorder;

fn now_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

impl Guest for Recorder {
    fn handle(message: Message) -> Result<(), Failure> {
        let begin = now_micros();
        let ms: u64 = config::get("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
        if ms > 0 {
            log::log(
                log::Level::Info,
                &format!(
                    "lease begin id={} queue={} at={begin}",
                    message.id, message.queue
                ),
            );
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        log::log(
            log::Level::Info,
            &format!(
                "record id={} queue={} attempt={} begin={begin} end={}",
                message.id,
                message.queue,
                message.attempt,
                now_micros()
            ),
        );
        Ok(())
    }
}

export!(Recorder);
