//! Test plugin: counts the calls its instance has served and rejects every
//! message with `call <n>`, so a test can tell a fresh instance (always
//! `call 1`) from a reused one. A body of `"trap"` panics instead.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use std::sync::atomic::{AtomicU32, Ordering};

use exports::switchyard::plugin::handler::{Failure, Guest, Message};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Counter;

impl Guest for Counter {
    fn handle(message: Message) -> Result<(), Failure> {
        let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        if message.body == "\"trap\"" {
            panic!("counter plugin traps on call {n}");
        }
        Err(Failure::Reject(format!("call {n}")))
    }
}

export!(Counter);
