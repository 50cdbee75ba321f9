//! Test plugin: panics on every message. With `panic = "abort"` a Rust panic
//! prints its message to stderr and traps.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};

struct Trap;

impl Guest for Trap {
    fn handle(message: Message) -> Result<(), Failure> {
        panic!("trap plugin panics on {}", message.id);
    }
}

export!(Trap);
