//! Test plugin: tries to reach the environment, the filesystem and the
//! network, and rejects every message with a report of what it reached, so
//! a test can read the report from the dead-letter stream. The address to
//! try comes from the `connect` config key.

wit_bindgen::generate!({ path: "../../wit/switchyard-plugin@0.1.0", world: "plugin" });

use exports::switchyard::plugin::handler::{Failure, Guest, Message};
use switchyard::plugin::config;

struct Probe;

fn outcome<T, E: std::fmt::Debug>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "reached".into(),
        Err(e) => format!("denied ({e:?})"),
    }
}

impl Guest for Probe {
    fn handle(_message: Message) -> Result<(), Failure> {
        let env = std::env::vars().count();
        // A variable the test sets in the host's own environment.
        let secret = match std::env::var("SWITCHYARD_TEST_SECRET") {
            Ok(_) => "present",
            Err(_) => "absent",
        };
        let args = std::env::args().count();
        let root = outcome(std::fs::read_dir("/"));
        let etc = outcome(std::fs::read("/etc/hostname"));
        let cwd = outcome(std::fs::read_dir("."));
        let net = match config::get("connect") {
            Some(addr) => outcome(std::net::TcpStream::connect(addr.as_str())),
            None => "not tried".into(),
        };
        Err(Failure::Reject(format!(
            "env={env} secret={secret} args={args} root={root} etc={etc} cwd={cwd} net={net}"
        )))
    }
}

export!(Probe);
