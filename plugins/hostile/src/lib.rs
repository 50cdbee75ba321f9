//! Test plugin: does what a careless or hostile plugin does with the texts
//! it hands the host, as the message body asks (`{"do": ...}`):
//!
//! - `reject` / `retry` with `bytes`: a reason of that many bytes;
//! - `forge`: a log line, output and a reason with newlines and what looks
//!   like a log line of the host's after them;
//! - `print-then-trap`: prints to stdout, then panics;
//! - `print`: prints to stdout and succeeds;
//! - `print-lots`: prints `bytes` bytes to stdout, then succeeds.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::log;
use switchyard::plugin::types::Retry;

/// What a forged line looks like: the host's own format.
const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO switchyard: FORGED";

struct Hostile;

impl Guest for Hostile {
    fn handle(message: Message) -> Result<(), Failure> {
        let body: serde_json::Value = serde_json::from_str(&message.body).unwrap_or_default();
        let bytes = body["bytes"].as_u64().unwrap_or(0) as usize;
        match body["do"].as_str().unwrap_or("") {
            "reject" => Err(Failure::Reject("r".repeat(bytes))),
            "retry" => Err(Failure::Retry(Retry {
                reason: "t".repeat(bytes),
                delay_ms: Some(10),
            })),
            "forge" => {
                log::log(log::Level::Info, &format!("log\n{FORGED}"));
                println!("stdout\n{FORGED}");
                eprintln!("stderr\r\n{FORGED}");
                Err(Failure::Reject(format!("reason\n{FORGED}")))
            }
            "print-then-trap" => {
                println!("hello from stdout");
                panic!("after printing");
            }
            "print" => {
                println!("printed by {}", message.id);
                Ok(())
            }
            "print-lots" => {
                let line = "y".repeat(1023);
                for _ in 0..bytes / 1024 {
                    println!("{line}");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

export!(Hostile);
