//! Test plugin: allocates memory until something stops it. Only the host's
//! memory cap does.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};

struct Hog;

impl Guest for Hog {
    fn handle(_message: Message) -> Result<(), Failure> {
        let mut kept: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really used.
            kept.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&kept);
        }
    }
}

export!(Hog);
