//! Support for Switchyard's integration tests: a real `redis-server` per test
//! on a free loopback port, the real plugins built from `plugins/`, a unique
//! key prefix per test, and the host run in-process or as a child process
//! that can be killed.
//!
//! - [`host`]: [`TestHost::start`], a host on its own Redis in one call;
//!   [`HostProcess`], the host as a process;
//! - [`config`]: [`TestConfig`], a queues.toml of the test's, the host's own
//!   key names for it;
//! - [`streams`]: the test's Redis, sending messages, reading streams and
//!   dead letters;
//! - [`waiting`]: waiting on a condition, a log line or a named event;
//! - [`wasm`]: the built plugins and versions of them;
//! - [`probes`]: what the probing plugins report;
//! - [`projects`]: plugin projects made by `switchyard new`, built and
//!   tested with their own tools;
//! - [`net`]: free ports and plain HTTP requests;
//! - [`redis_server`], [`chaos`]: the servers tests start and kill;
//! - [`ha`]: Redis over TLS with ACLs, under Sentinel, as a Cluster;
//! - [`total`]: producing to any deployment and counting what became of
//!   each message.

use std::path::{Path, PathBuf};

pub use switchyard;

pub mod browser;
pub mod chaos;
pub mod config;
pub mod ha;
pub mod host;
pub mod net;
pub mod probes;
pub mod projects;
pub mod redis_server;
pub mod streams;
pub mod total;
pub mod waiting;
pub mod wasm;

pub use browser::Browser;
pub use config::*;
pub use host::*;
pub use net::*;
pub use probes::*;
pub use redis_server::RedisServer;
pub use streams::*;
pub use waiting::*;
pub use wasm::*;

/// The six queues chat.ended fans out to (seed 000).
pub const CHAT_ENDED_QUEUES: &[&str] = &[
    "Persistence",
    "Email",
    "Ticket",
    "Salesforce",
    "Zendesk",
    "WebHook",
];

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}
