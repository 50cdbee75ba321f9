//! The model of `queues.toml`: a data model at the bottom of the house,
//! read in three steps, each reporting every problem it finds at once,
//! in line order, with its key path and line:
//!
//! - [`parse`]: the text into serde structs ([`raw`]), strict about keys;
//! - [`validate`]: ranges, forms and cross-field rules, pure (no I/O):
//!   settings that are valid but contradict each other are warnings;
//! - [`resolve`]: the I/O, and only what the command at hand [`Needs`]:
//!   secrets from the environment, CA and key files, plugin files and
//!   migration folders checked to exist.
//!
//! [`settings`] lists every effective setting as records, and
//! [`ConfigChanges`] what an edit changes. Nothing here touches Redis,
//! compiles a plugin or builds a TLS configuration: those checks are the
//! layers' above (`supervisor::preflight`).

mod defaults;
pub mod parse;
mod queue;
pub mod raw;
pub mod relay;
mod resolve;
pub mod settings;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use parse::Lines;
pub use queue::{
    CaFile, HttpSettings, KeyValueGrant, MailSettings, PublishGrant, QueueConfig, RetryPolicy,
    Secret, SqlSettings,
};
pub use relay::{BadRelay, Security, SmtpRelay};
pub use settings::{Change, ConfigChanges, RESTART_ONLY, Shown};

/// Largest `memory_mib` a queue may ask for. The wasmtime pool reserves
/// address space for this much per instance slot.
pub const MAX_MEMORY_MIB: u32 = 4096;
/// Largest `concurrency` a queue may ask for.
pub const MAX_CONCURRENCY: u32 = 1024;
/// Largest `ingress.partitions`: each partition is a stream per queue,
/// read by every host on a connection of its own.
pub const MAX_PARTITIONS: usize = 256;
/// Largest `max_entry_kib`: 64 MiB. Redis keeps a whole entry in memory,
/// and the host may hold a batch of them.
pub const MAX_ENTRY_KIB: u64 = 64 * 1024;
/// The longest duration any setting may have (a year of 365.25 days, as
/// durations are written). Longer ones are
/// surely typing errors, and would overflow the clocks they are added to.
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

/// A validated queues.toml.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from; plugin paths are relative to its folder.
    pub path: PathBuf,
    pub host: HostSettings,
    pub ingress: IngressSettings,
    pub retention: RetentionSettings,
    /// The admin HTTP server (`[admin]`); off without the table.
    pub admin: Option<AdminSettings>,
    /// How the host reaches Redis besides its URL (`[redis]`).
    pub redis: RedisSettings,
    /// Message type, lower-cased, to the queues it fans out to, in file order.
    pub routes: BTreeMap<String, Vec<String>>,
    /// Message types, lower-cased, whose bodies the router checks against
    /// the chat events schema (`validate = true`): a body that does not
    /// match is dead-lettered with what is wrong.
    pub validated: BTreeSet<String>,
    /// Queue name to its settings.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Settings that are valid but work against each other, in line order.
    pub warnings: Vec<ConfigError>,
    /// Where each key of the file is, for what later checks report.
    pub lines: Lines,
}

/// The `[admin]` table: the HTTP server for metrics, health and the
/// dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where it listens; loopback unless the operator says otherwise.
    pub listen: std::net::SocketAddr,
    /// How long what `/metrics` reads from Redis (backlogs, pending
    /// messages) is reused: at most one read of Redis per interval, however
    /// often it is scraped.
    pub stats_interval: Duration,
    /// HTTPS instead of HTTP (`tls_cert` and `tls_key`).
    pub tls: Option<AdminTls>,
    /// Host names the dashboard answers to besides loopback's and the
    /// listen address (`hosts`, lower-cased): any other `Host` is refused,
    /// so a web page whose name was made to resolve to this host (DNS
    /// rebinding) reads nothing.
    pub hosts: Vec<String>,
    /// `SWITCHYARD_ADMIN_TOKEN`, from the environment: reads and actions.
    pub token: Option<Secret>,
    /// `SWITCHYARD_ADMIN_READ_TOKEN`: reads only.
    pub read_token: Option<Secret>,
}

/// The admin server's certificate and key, as read with queues.toml;
/// whether they make a TLS configuration is checked before the file is
/// used (`crate::tls::server_config`, in preflight).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: Arc<[u8]>,
    pub key_pem: Arc<[u8]>,
}

impl std::fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The `[host]` table.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Prefix of every Redis key the host owns, and the name of its consumer
    /// groups. Two deployments sharing one Redis use two prefixes.
    pub prefix: String,
    /// How long in-flight handlers get to finish on SIGINT/SIGTERM before the
    /// host exits and leaves them pending for redelivery.
    pub shutdown_timeout: Duration,
    /// Where compiled plugins are cached; `None` turns the cache off.
    pub cache_dir: Option<PathBuf>,
    /// CPU time one plugin's compilation may take; it is stopped and the
    /// plugin refused past it. CPU time, not wall-clock time, so that a busy
    /// machine does not make a plugin fail that compiles fine.
    pub plugin_compile_timeout: Duration,
    /// Memory one plugin's compilation may use.
    pub plugin_compile_memory_mib: u32,
    /// A plugin file larger than this is refused.
    pub max_plugin_bytes: u64,
    /// What to do when a consumer group the host reads vanishes.
    pub on_missing_group: MissingGroup,
}

/// What to do when a consumer group vanishes (Redis lost its data, or an
/// operator deleted it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingGroup {
    /// Recreate it at the start of the stream (every entry still there is
    /// handled; none is skipped), and say so loudly.
    Recreate,
    /// Stop reading that stream, and say so loudly, until an operator
    /// recreates the group.
    Stop,
}

impl MissingGroup {
    pub fn as_str(self) -> &'static str {
        match self {
            MissingGroup::Recreate => "recreate",
            MissingGroup::Stop => "stop",
        }
    }
}

/// The `[ingress]` table: the stream the chat server XADDs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    /// The stream key, used as is (not prefixed): it belongs to the producer.
    pub stream: String,
    /// How many ingress entries the router reads and fans out in one atomic
    /// step.
    pub batch: usize,
    /// An ingress entry read by a router that has been pending this long is
    /// taken over by another router (its reader died).
    pub visibility_timeout: Duration,
    /// The largest entry the router takes, in bytes; a larger one is
    /// dead-lettered without the host ever holding it. So the router holds
    /// at most `batch` x this.
    pub max_entry_bytes: usize,
    /// How many partitions the ingress, and every queue, is split into
    /// (`crate::stream::layout`): each one's keys share a Redis Cluster
    /// slot, so every step stays one atomic script.
    pub partitions: usize,
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            stream: "chat:events".into(),
            batch: 256,
            visibility_timeout: Duration::from_secs(30),
            max_entry_bytes: 1024 * 1024,
            partitions: 1,
        }
    }
}

/// The `[redis]` table: credentials and TLS besides the URL, and how long
/// the host waits for replicas.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisSettings {
    /// The data nodes' ACL user and password, over the URL's.
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sentinels' own.
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// Private CA certificates the servers' may chain to, besides the web's
    /// roots.
    pub ca_file: Option<CaFile>,
    /// Replicas that must have a step of the host's (routing an ingress
    /// entry, settling a message) before it goes on (`WAIT`); 0: none.
    pub wait_replicas: u32,
    /// How long it waits for them at most.
    pub wait_timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("username", &self.username)
            .field("sentinel_username", &self.sentinel_username)
            .field("ca_file", &self.ca_file)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish_non_exhaustive()
    }
}

/// The `[retention]` table: how streams are kept bounded.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// How often the host trims.
    pub interval: Duration,
    /// Handled entries of the ingress and queue streams are kept this long
    /// (for inspection), then trimmed. Entries not yet read, or read and
    /// still pending, are never trimmed.
    pub keep_handled: Duration,
    /// Dead letters are kept this long (CAP keeps failed messages 15 days).
    pub dead_letter_age: Duration,
    /// And at most this many; 0 for no limit.
    pub dead_letter_max_len: u64,
    /// A consumer idle this long with nothing pending (its process is gone)
    /// is removed from its group.
    pub idle_consumer: Duration,
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `queues.Email.concurrency`; empty for the file.
    pub key: String,
    /// 1-based line of the key, when it is in the file.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one file, in line order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<ConfigError>,
    /// The plugin files the file names, resolved (missing ones among them):
    /// a running host watches them, so that building a missing plugin
    /// retries the edit.
    pub plugins: BTreeSet<PathBuf>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has {} error{}:",
            self.path.display(),
            self.errors.len(),
            if self.errors.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// The largest queues.toml read.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// A queue's handler: a plugin file, or one built into the host
/// (`builtin:NAME`, checked against the registry of native handlers before
/// the file is used, not while it is read).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginRef {
    File(PathBuf),
    Builtin(String),
}

/// How a queue names a handler built into the host instead of a file.
pub const BUILTIN_PREFIX: &str = "builtin:";

impl PluginRef {
    /// The file, if the handler is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            PluginRef::File(p) => Some(p),
            PluginRef::Builtin(_) => None,
        }
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::File(p) => write!(f, "{}", p.display()),
            PluginRef::Builtin(name) => write!(f, "{BUILTIN_PREFIX}{name}"),
        }
    }
}

/// What a command needs resolved: `run` and `check` need everything;
/// `status` and `dead` only the names of the streams and the way to Redis
/// (`[redis]`'s secrets and CA file; no other secret, file or plugin);
/// `migrate` the databases (secrets and CA files, no plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Secrets are read from the environment; without, they are empty.
    pub secrets: bool,
    /// CA files, the admin server's certificate and key, and migration
    /// folders are read.
    pub files: bool,
    /// Plugin files must exist.
    pub plugins: bool,
    /// `[redis]`'s secrets and CA file are read.
    pub redis: bool,
}

impl Needs {
    pub const ALL: Needs = Needs {
        secrets: true,
        files: true,
        plugins: true,
        redis: true,
    };
    pub const STREAMS: Needs = Needs {
        secrets: false,
        files: false,
        plugins: false,
        redis: true,
    };
    pub const DATABASES: Needs = Needs {
        secrets: true,
        files: true,
        plugins: false,
        redis: false,
    };
}

/// An environment variable of this process, if it is set and UTF-8.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Errors and warnings in the order of the file: by line, those without one
/// (the file as a whole) first.
fn sort_by_line(errors: &mut [ConfigError]) {
    errors.sort_by_key(|e| e.line.unwrap_or(0));
}

impl Config {
    /// Reads and validates a file, resolving everything (for `run` and
    /// `check`). Its path is made absolute, so plugin paths are too.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with(path, &process_env, Needs::ALL)
    }

    /// [`Config::load`], with secrets read through `env`.
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Self::load_with(path, env, Needs::ALL)
    }

    /// Reads and validates a file, resolving what `needs` says.
    pub fn load_with(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        needs: Needs,
    ) -> Result<Config, ConfigErrors> {
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let text = crate::files::read_text(path, MAX_CONFIG_BYTES).map_err(|e| ConfigErrors {
            path: path.to_owned(),
            errors: vec![ConfigError {
                key: String::new(),
                line: None,
                message: format!("cannot read {}: {e}", path.display()),
            }],
            plugins: BTreeSet::new(),
        })?;
        Self::parse_with(&text, path, env, needs)
    }

    /// Validates the text of a file that lives at `path` (used to resolve
    /// relative paths and to name the file in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        Self::parse_with(text, path, &process_env, Needs::ALL)
    }

    /// [`Config::parse`], with secrets read through `env`, resolving what
    /// `needs` says.
    pub fn parse_with(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        needs: Needs,
    ) -> Result<Config, ConfigErrors> {
        let base = path.parent().unwrap_or(Path::new("."));
        let refuse = |mut errors: Vec<ConfigError>, plugins| {
            sort_by_line(&mut errors);
            ConfigErrors {
                path: path.to_owned(),
                errors,
                plugins,
            }
        };
        let parsed = parse::parse(text).map_err(|e| refuse(vec![e], BTreeSet::new()))?;
        let mut validated = validate::validate(&parsed.raw, &parsed.lines, path, base);
        let mut errors = parsed.errors;
        errors.append(&mut validated.errors);
        let plugins = validated.plugins.clone();
        let mut resolved = resolve::resolve(validated, &parsed.lines, env, needs);
        errors.append(&mut resolved.errors);
        if !errors.is_empty() {
            return Err(refuse(errors, plugins));
        }
        let mut config = resolved.config;
        sort_by_line(&mut config.warnings);
        config.lines = parsed.lines;
        Ok(config)
    }

    /// An error about `key` of this file, with its line.
    pub fn error(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let key = key.into();
        ConfigError {
            line: self.lines.of(&key),
            key,
            message: message.into(),
        }
    }

    /// The plugin files this configuration names.
    pub fn plugin_files(&self) -> BTreeSet<PathBuf> {
        self.queues
            .values()
            .filter_map(|q| q.plugin.file().map(Path::to_owned))
            .collect()
    }
}
