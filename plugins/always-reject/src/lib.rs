//! Test plugin: rejects every message as permanently bad data.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};

struct AlwaysReject;

impl Guest for AlwaysReject {
    fn handle(message: Message) -> Result<(), Failure> {
        Err(Failure::Reject(format!(
            "{} {} is not acceptable",
            message.message_type, message.id
        )))
    }
}

export!(AlwaysReject);
