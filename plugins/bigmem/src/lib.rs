//! Test plugin: its linear memory starts at more than 80 MiB (a zeroed
//! static array the linker places in it), so a queue whose `memory_mib` is
//! smaller could never instantiate it. The host must refuse it at load.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};

static mut BIG: [u8; 80 * 1024 * 1024] = [0; 80 * 1024 * 1024];

struct BigMem;

impl Guest for BigMem {
    fn handle(message: Message) -> Result<(), Failure> {
        // Write and read the array, so it is kept.
        let big = std::ptr::addr_of_mut!(BIG);
        let i = std::hint::black_box(message.attempt as usize * 4096 % (80 * 1024 * 1024));
        // SAFETY: one call at a time per instance; nothing else holds it.
        let seen = unsafe {
            (*big)[i] += 1;
            (*big)[i]
        };
        if seen > 1 {
            return Err(Failure::Reject(format!("seen {seen} times")));
        }
        Ok(())
    }
}

export!(BigMem);
