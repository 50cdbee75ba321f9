//! No-op plugin: every message succeeds at once. The WebAssembly side of
//! the benchmarks, beside the host's built-in native `builtin:noop`.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};

struct Noop;

impl Guest for Noop {
    fn handle(_message: Message) -> Result<(), Failure> {
        Ok(())
    }
}

export!(Noop);
