//! A queue's settings and the grants of its plugin.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{PluginRef, SmtpRelay};

/// One `[queues.<name>]` table.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    /// The handler: a plugin file (resolved against the config file's
    /// folder) or a built-in one.
    pub plugin: PluginRef,
    /// The most messages of this queue one host handles at once.
    pub concurrency: u32,
    /// The fewest handler slots it keeps: equal to `concurrency` when that
    /// is fixed; below it, the queue scales between them with its backlog.
    pub concurrency_min: u32,
    /// CPU and wall-clock budget of one handler call.
    pub handler_timeout: Duration,
    /// Linear memory cap of one plugin instance, in MiB.
    pub memory_mib: u32,
    /// The largest message this queue takes, in bytes; a larger copy is
    /// dead-lettered for this queue instead of added to its stream.
    pub max_entry_bytes: usize,
    /// A message whose consumer has not renewed its lease for this long is
    /// taken to be abandoned (its host died or hung) and is delivered again.
    /// A live host renews the lease of every message it is handling.
    pub visibility_timeout: Duration,
    /// Deliveries before a failing message is dead-lettered.
    pub max_attempts: u32,
    /// Attempts that trapped (a panic, an uncaught exception: a bug, which
    /// retrying seldom cures) before the message is dead-lettered, however
    /// many attempts `max_attempts` allows.
    pub max_trap_attempts: u32,
    /// Retries made quickly, `retry_quick_delay` apart, before the spaced
    /// ones (in the spirit of CAP's three immediate retries).
    pub retry_quick: u32,
    pub retry_quick_delay: Duration,
    /// Delay before the first spaced retry; doubled for each later one.
    pub retry_delay: Duration,
    /// Upper bound of the doubling backoff; by default the visibility
    /// timeout, the longest a retry can wait today.
    pub retry_delay_max: Duration,
    /// Keep a plugin's instances between messages (up to `concurrency`)
    /// instead of a fresh one per message: much cheaper per message, but
    /// state a plugin keeps in memory carries over from one message to the
    /// next. An instance whose call trapped, timed out or hit the memory cap
    /// is discarded; a reload starts afresh.
    pub reuse_instances: bool,
    /// The plugin's own settings, handed to it through the `config` import,
    /// secrets resolved.
    pub plugin_config: serde_json::Map<String, serde_json::Value>,
    /// The plugin settings that are secrets, read from the environment.
    pub secrets: Vec<Secret>,
    /// Outbound HTTP: where the plugin may send requests, and the limits.
    pub http: HttpSettings,
    /// Key-value state, if granted.
    pub keyvalue: Option<KeyValueGrant>,
    /// Follow-up messages the plugin may publish.
    pub publish: PublishGrant,
    /// A message that has been published this many times in a chain
    /// (`switchyard-hops`) is dead-lettered instead of handled.
    pub max_hops: u32,
    /// SQL on a PostgreSQL database, if granted.
    pub sql: Option<SqlSettings>,
    /// Mail through an SMTP relay, if granted.
    pub mail: Option<MailSettings>,
}

/// A queue's PostgreSQL database: `[queues.X.sql]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SqlSettings {
    /// `postgres://user:password@host:port/database`, usually a secret;
    /// `?sslmode=require` for TLS.
    pub database_url: String,
    /// A private CA the server's certificate may chain to, besides the
    /// web's roots.
    pub ca_file: Option<CaFile>,
    /// Connections the queue's pool opens at most.
    pub pool: u32,
    /// The longest one statement may run (never past the call's deadline);
    /// also the server-side `statement_timeout` of the pool's sessions.
    pub timeout: Duration,
    /// Rows one query may return.
    pub max_rows: u32,
    /// Bytes of values one query may return.
    pub max_result_bytes: usize,
    /// The folder of the queue's schema migrations (`switchyard migrate`),
    /// resolved against the config file's folder.
    pub migrations: Option<PathBuf>,
}

impl fmt::Debug for SqlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlSettings")
            .field("database_url", &"[secret]")
            .field("ca_file", &self.ca_file)
            .field("pool", &self.pool)
            .field("timeout", &self.timeout)
            .field("max_rows", &self.max_rows)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("migrations", &self.migrations)
            .finish()
    }
}

/// Certificates of private certificate authorities a connection trusts
/// besides the web's roots (`ca_file`): a PEM file read when the config is
/// loaded, so a changed file is a changed config.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    /// The file's PEM text, at least one certificate.
    pub pem: Arc<[u8]>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CaFile").field(&self.path).finish()
    }
}

/// A queue's SMTP relay: `[queues.X.mail]`.
#[derive(Clone, PartialEq, Eq)]
pub struct MailSettings {
    /// `smtp://host:port` (plain, or STARTTLS with `?tls=required`) or
    /// `smtps://host:port` (TLS from the start), credentials optionally
    /// in it.
    pub smtp_url: String,
    /// Credentials, when not in the URL.
    pub username: Option<String>,
    pub password: Option<String>,
    /// A private CA the relay's certificate may chain to, besides the
    /// web's roots.
    pub ca_file: Option<CaFile>,
    /// Connections to the relay kept open at most.
    pub pool: u32,
    /// The longest one mail may take to send, connecting included (never
    /// past the call's deadline).
    pub timeout: Duration,
    /// Sender addresses allowed (`name@domain`, or `@domain` for any at
    /// it); empty: any.
    pub from: Vec<String>,
    /// Mails one call may send.
    pub max_per_call: u32,
    /// Recipients (to, cc and bcc) one mail may have.
    pub max_recipients: u32,
    /// The largest mail, bodies and headers, in bytes.
    pub max_bytes: usize,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("smtp_url", &"[secret]")
            .field("ca_file", &self.ca_file)
            .field("pool", &self.pool)
            .field("timeout", &self.timeout)
            .field("from", &self.from)
            .field("max_per_call", &self.max_per_call)
            .field("max_recipients", &self.max_recipients)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl MailSettings {
    /// The relay `smtp_url` and the credentials name (checked when the
    /// file was read).
    pub fn relay(&self) -> Result<SmtpRelay, super::relay::BadRelay> {
        SmtpRelay::parse(
            &self.smtp_url,
            self.username.as_deref(),
            self.password.as_deref(),
        )
    }

    /// Whether `address` may be a sender.
    pub fn allows_sender(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        self.from.is_empty()
            || self.from.iter().any(|a| {
                let a = a.to_ascii_lowercase();
                if a.starts_with('@') {
                    address.ends_with(&a)
                } else {
                    address == a
                }
            })
    }
}

/// A plugin setting written `{ env = "NAME" }`: its value comes from the
/// host's environment, and is masked in everything the plugin hands back.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The setting's key under `[queues.X.config]`.
    pub key: String,
    /// The environment variable it is read from.
    pub env: String,
    pub value: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} from ${})", self.key, self.env)
    }
}

/// Outbound HTTP settings of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// `allowed_hosts`: the destinations requests may go to; none by
    /// default.
    pub grant: crate::grants::HttpGrant,
    /// The longest one request may take, connecting included (never past
    /// the handler's deadline).
    pub timeout: Duration,
    /// The largest response body a plugin may read.
    pub max_response_bytes: usize,
    /// Requests one call may send.
    pub max_requests: u32,
    /// Requests in flight to one destination at once, over every call of
    /// the queue.
    pub max_connections_per_host: u32,
    /// Keep connections open between requests, pooled per destination
    /// (`http_keep_alive`); off, every request opens its own.
    pub keep_alive: bool,
    /// A private CA https destinations' certificates may chain to, besides
    /// the web's roots (`http_ca_file`).
    pub ca_file: Option<CaFile>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            grant: Default::default(),
            timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
            max_requests: 20,
            max_connections_per_host: 8,
            keep_alive: true,
            ca_file: None,
        }
    }
}

/// A queue's key-value grant: its buckets, within a quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValueGrant {
    /// Keys the queue may hold at once, over all its buckets.
    pub max_keys: u64,
    /// Bytes of values it may hold at once.
    pub max_bytes: u64,
    /// A key not written again for this long expires; `None`: kept.
    pub ttl: Option<Duration>,
}

/// The message types a queue's plugin may publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishGrant {
    /// Lower-cased types; `*` for any.
    pub types: Vec<String>,
    /// Messages one call may publish.
    pub max_per_call: u32,
}

impl PublishGrant {
    pub fn allows(&self, message_type: &str) -> bool {
        let t = message_type.to_ascii_lowercase();
        self.types.iter().any(|g| g == "*" || *g == t)
    }
}

/// How a queue retries: the part of its settings that settling a failed
/// attempt needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// Attempts that trapped before the message is dead-lettered.
    pub max_trap_attempts: u32,
    pub retry_quick: u32,
    pub retry_quick_delay: Duration,
    pub retry_delay: Duration,
    pub retry_delay_max: Duration,
    /// A retry waits on the message's idle clock: no delay is longer.
    pub visibility_timeout: Duration,
}

impl RetryPolicy {
    /// The backoff before attempt `next_attempt` (2, 3, ...): the quick
    /// retries first, then the doubling ones.
    pub fn backoff(&self, next_attempt: u32) -> Duration {
        let retry = next_attempt.saturating_sub(1);
        if retry <= self.retry_quick {
            return self.retry_quick_delay;
        }
        let doublings = (retry - self.retry_quick - 1).min(30);
        self.retry_delay
            .saturating_mul(1u32 << doublings)
            .min(self.retry_delay_max)
    }
}

impl QueueConfig {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            max_trap_attempts: self.max_trap_attempts,
            retry_quick: self.retry_quick,
            retry_quick_delay: self.retry_quick_delay,
            retry_delay: self.retry_delay,
            retry_delay_max: self.retry_delay_max,
            visibility_timeout: self.visibility_timeout,
        }
    }
}
