//! Test plugin: never returns. Only the host's deadline stops it.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};

struct Spin;

impl Guest for Spin {
    fn handle(message: Message) -> Result<(), Failure> {
        let mut n: u64 = message.attempt.into();
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export!(Spin);
