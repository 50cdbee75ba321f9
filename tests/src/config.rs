//! A queues.toml written for one test, with a key prefix of its own, and
//! folders for a test's files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use switchyard::config::Config;
use switchyard::stream::Keys;

use crate::{plugin, plugin_dir};

/// Values for the secrets the shipped queues.toml reads from the
/// environment.
pub const SHIPPED_SECRETS: &[(&str, &str)] = &[
    ("WEBHOOK_SIGNING_SECRET", "whsec-shipped-test"),
    ("ZENDESK_API_TOKEN", "zd-shipped-test"),
    ("SALESFORCE_ACCESS_TOKEN", "sf-shipped-test"),
    ("TICKET_API_TOKEN", "tk-shipped-test"),
    (
        "PERSISTENCE_DATABASE_URL",
        "postgres://switchyard:pw@127.0.0.1:5432/chat",
    ),
    ("EMAIL_SMTP_URL", "smtp://127.0.0.1:2525"),
];

/// A queues.toml written for one test. The text may use `@PLUGINS@` (the
/// built plugin folder) and `@PREFIX@` (a prefix unique to this test); the
/// ingress stream is `@PREFIX@:ingress` unless the text sets one.
#[derive(Debug)]
pub struct TestConfig {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub prefix: String,
    pub config: Config,
}

impl TestConfig {
    pub fn new(text: &str) -> Self {
        Self::with_env(text, &[])
    }

    /// [`TestConfig::new`], with secrets (`{ env = "NAME" }`) read from
    /// `env`, not from this process's environment.
    pub fn with_env(text: &str, env: &[(&str, &str)]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        plugin("sleep");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("t{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("switchyard-test-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = text
            .replace("@PLUGINS@", plugin_dir().to_str().unwrap())
            .replace("@PREFIX@", &prefix);
        if !text.contains("[host]") {
            text = format!(
                "[host]\nprefix = \"{prefix}\"\nshutdown_timeout = \"5s\"\ncache_dir = \"cache\"\n{text}"
            );
        }
        if !text.contains("[ingress]") {
            text = format!(
                "[ingress]\nstream = \"{prefix}:ingress\"\nvisibility_timeout = \"1s\"\n{text}"
            );
        }
        let path = dir.join("queues.toml");
        std::fs::write(&path, &text).unwrap();
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let config =
            Config::load_with_env(&path, &lookup).unwrap_or_else(|e| panic!("{e}\n{text}"));
        TestConfig {
            dir,
            path,
            prefix,
            config,
        }
    }

    pub fn ingress(&self) -> &str {
        &self.config.ingress.stream
    }

    /// The host's own names of this test's Redis keys (on one node).
    pub fn keys(&self) -> Keys {
        Keys::of(&self.config, false)
    }

    /// Partition 0's stream of `queue`.
    pub fn queue_stream(&self, queue: &str) -> String {
        self.keys().first().queue_stream(queue)
    }

    /// Partition 0's dead letters.
    pub fn dead_stream(&self) -> String {
        self.keys().first().dead_letter()
    }
}

impl Drop for TestConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh, empty folder for one test's files.
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
