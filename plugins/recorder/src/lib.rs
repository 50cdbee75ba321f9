//! Test plugin: records every handling in the host's log, as
//! `record id=<message id> queue=<queue> attempt=<n>`, and succeeds. The chaos
//! test reads these lines from the logs of every host it ran, outside the
//! hosts, to count what was handled and how often.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::log;

struct Recorder;

impl Guest for Recorder {
    fn handle(message: Message) -> Result<(), Failure> {
        log::log(
            log::Level::Info,
            &format!(
                "record id={} queue={} attempt={}",
                message.id, message.queue, message.attempt
            ),
        );
        Ok(())
    }
}

export!(Recorder);
