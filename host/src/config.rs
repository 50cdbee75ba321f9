//! The model of `queues.toml`: parsing and complete validation.
//!
//! Parsing is strict (an unknown key is an error) and validation is complete:
//! every problem in the file is reported in one run, in line order, each
//! naming its key path (`queues.Email.concurrency`) and line, so an operator
//! fixes everything in one edit. Settings that are valid but contradict each
//! other are reported as warnings. Nothing here touches Redis or compiles a
//! plugin; `switchyard check` adds the plugin compilation on top.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// Largest `memory_mib` a queue may ask for. The wasmtime pool reserves
/// address space for this much per instance slot.
pub const MAX_MEMORY_MIB: u32 = 4096;
/// Largest `concurrency` a queue may ask for.
pub const MAX_CONCURRENCY: u32 = 1024;
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
    /// Message type, lower-cased, to the queues it fans out to, in file order.
    pub routes: BTreeMap<String, Vec<String>>,
    /// Queue name to its settings.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Settings that are valid but work against each other, in line order.
    pub warnings: Vec<ConfigError>,
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

/// The admin server's certificate and key, read and checked with
/// queues.toml (the key must be the certificate's).
#[derive(Clone)]
pub struct AdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
    /// Of both files' contents: a renewed certificate is a change.
    digest: [u8; 32],
}

impl PartialEq for AdminTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.cert, &self.key, self.digest) == (&other.cert, &other.key, other.digest)
    }
}

impl Eq for AdminTls {}

impl std::fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The largest private key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

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

/// The default cache folder: `$XDG_CACHE_HOME/switchyard`, else
/// `~/.cache/switchyard`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("switchyard"))
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
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            stream: "chat:events".into(),
            batch: 256,
            visibility_timeout: Duration::from_secs(30),
            max_entry_bytes: 1024 * 1024,
        }
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

/// One `[queues.<name>]` table.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    /// The plugin file, resolved against the config file's folder.
    pub plugin: PathBuf,
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
    pub pem: Vec<u8>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CaFile").field(&self.path).finish()
    }
}

/// The largest CA file read: a bundle of every public root is about 200 KiB.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// The largest queues.toml read.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

impl CaFile {
    /// Reads `path`: every PEM block in it must be a certificate a client
    /// can trust as a root, and there must be one.
    pub fn read(path: &Path) -> Result<CaFile, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;

        let pem = crate::files::read(path, MAX_CA_FILE_BYTES)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "{}: holds no certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(CaFile {
            path: path.to_owned(),
            pem,
        })
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

impl QueueConfig {
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

/// An environment variable of this process, if it is set and UTF-8.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Errors and warnings in the order of the file: by line, those without one
/// (the file as a whole) first.
fn sort_by_line(errors: &mut [ConfigError]) {
    errors.sort_by_key(|e| e.line.unwrap_or(0));
}

impl Config {
    /// Reads and validates a file. Its path is made absolute, so plugin paths
    /// are too.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_env(path, &process_env)
    }

    /// [`Config::load`], with secrets read through `env` instead of the
    /// process's environment.
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
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
        Self::parse_with_env(&text, path, env)
    }

    /// Validates the text of a file that lives at `path` (used to resolve
    /// plugin paths and to name the file in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        Self::parse_with_env(text, path, &process_env)
    }

    /// [`Config::parse`], with secrets read through `env`.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let base = path.parent().unwrap_or(Path::new("."));
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigErrors {
            path: path.to_owned(),
            errors: vec![syntax_error(text, &e)],
            plugins: BTreeSet::new(),
        })?;
        let mut v = Validator {
            lines: KeyLines::new(text),
            env,
            errors: Vec::new(),
            warnings: Vec::new(),
            plugins: BTreeSet::new(),
        };
        let mut config = v.config(&table, path, base);
        if v.errors.is_empty() {
            sort_by_line(&mut v.warnings);
            config.warnings = v.warnings;
            Ok(config)
        } else {
            sort_by_line(&mut v.errors);
            Err(ConfigErrors {
                path: path.to_owned(),
                errors: v.errors,
                plugins: v.plugins,
            })
        }
    }

    /// Every effective setting, defaults included, as `key path -> value`:
    /// what a reload compares, and what operators are shown. Plugin config
    /// values are shown as JSON.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        let mut s = BTreeMap::new();
        let h = &self.host;
        s.insert("host.prefix".into(), h.prefix.clone());
        s.insert("host.shutdown_timeout".into(), d(&h.shutdown_timeout));
        s.insert(
            "host.cache_dir".into(),
            h.cache_dir
                .as_ref()
                .map_or_else(|| "(off)".into(), |p| p.display().to_string()),
        );
        s.insert(
            "host.plugin_compile_timeout".into(),
            d(&h.plugin_compile_timeout),
        );
        s.insert(
            "host.plugin_compile_memory_mib".into(),
            h.plugin_compile_memory_mib.to_string(),
        );
        s.insert(
            "host.max_plugin_mib".into(),
            (h.max_plugin_bytes / (1024 * 1024)).to_string(),
        );
        s.insert(
            "host.on_missing_group".into(),
            h.on_missing_group.as_str().into(),
        );
        if let Some(a) = &self.admin {
            s.insert("admin.listen".into(), a.listen.to_string());
            s.insert("admin.stats_interval".into(), d(&a.stats_interval));
            s.insert("admin.hosts".into(), a.hosts.join(", "));
            if let Some(tls) = &a.tls {
                s.insert("admin.tls_cert".into(), tls.cert.display().to_string());
                s.insert("admin.tls_key".into(), tls.key.display().to_string());
            }
        }
        let i = &self.ingress;
        s.insert("ingress.stream".into(), i.stream.clone());
        s.insert("ingress.batch".into(), i.batch.to_string());
        s.insert(
            "ingress.visibility_timeout".into(),
            d(&i.visibility_timeout),
        );
        s.insert(
            "ingress.max_entry_kib".into(),
            (i.max_entry_bytes / 1024).to_string(),
        );
        let r = &self.retention;
        s.insert("retention.interval".into(), d(&r.interval));
        s.insert("retention.keep_handled".into(), d(&r.keep_handled));
        s.insert("retention.dead_letter_age".into(), d(&r.dead_letter_age));
        s.insert(
            "retention.dead_letter_max_len".into(),
            r.dead_letter_max_len.to_string(),
        );
        s.insert("retention.idle_consumer".into(), d(&r.idle_consumer));
        for (message_type, queues) in &self.routes {
            s.insert(format!("routes.\"{message_type}\""), queues.join(", "));
        }
        for q in self.queues.values() {
            let k = |key: &str| format!("queues.{}.{key}", q.name);
            s.insert(k("plugin"), q.plugin.display().to_string());
            s.insert(
                k("concurrency"),
                if q.concurrency_min == q.concurrency {
                    q.concurrency.to_string()
                } else {
                    format!("{{ min = {}, max = {} }}", q.concurrency_min, q.concurrency)
                },
            );
            s.insert(k("handler_timeout"), d(&q.handler_timeout));
            s.insert(k("memory_mib"), q.memory_mib.to_string());
            s.insert(k("max_entry_kib"), (q.max_entry_bytes / 1024).to_string());
            s.insert(k("visibility_timeout"), d(&q.visibility_timeout));
            s.insert(k("max_attempts"), q.max_attempts.to_string());
            s.insert(k("retry_quick"), q.retry_quick.to_string());
            s.insert(k("retry_quick_delay"), d(&q.retry_quick_delay));
            s.insert(k("retry_delay"), d(&q.retry_delay));
            s.insert(k("retry_delay_max"), d(&q.retry_delay_max));
            s.insert(k("reuse_instances"), q.reuse_instances.to_string());
            for (key, value) in &q.plugin_config {
                let shown = match q.secrets.iter().find(|s| s.key == *key) {
                    Some(secret) => format!("(secret from ${})", secret.env),
                    None => value.to_string(),
                };
                s.insert(k(&format!("config.{key}")), shown);
            }
            let hosts: Vec<String> = q
                .http
                .grant
                .allowed
                .iter()
                .map(ToString::to_string)
                .collect();
            s.insert(k("allowed_hosts"), hosts.join(", "));
            s.insert(k("http_timeout"), d(&q.http.timeout));
            s.insert(
                k("max_response_kib"),
                (q.http.max_response_bytes / 1024).to_string(),
            );
            s.insert(k("max_requests_per_call"), q.http.max_requests.to_string());
            s.insert(
                k("max_connections_per_host"),
                q.http.max_connections_per_host.to_string(),
            );
            s.insert(k("http_keep_alive"), q.http.keep_alive.to_string());
            s.insert(
                k("http_ca_file"),
                q.http
                    .ca_file
                    .as_ref()
                    .map_or("(none)".into(), |c| c.path.display().to_string()),
            );
            if let Some(kv) = &q.keyvalue {
                s.insert(k("keyvalue.max_keys"), kv.max_keys.to_string());
                s.insert(k("keyvalue.max_kib"), (kv.max_bytes / 1024).to_string());
                s.insert(
                    k("keyvalue.ttl"),
                    kv.ttl.as_ref().map_or("(none)".into(), d),
                );
            }
            s.insert(k("publish"), q.publish.types.join(", "));
            s.insert(
                k("max_publish_per_call"),
                q.publish.max_per_call.to_string(),
            );
            s.insert(k("max_hops"), q.max_hops.to_string());
            if let Some(sql) = &q.sql {
                s.insert(k("sql.database_url"), fingerprint(&sql.database_url));
                s.insert(k("sql.pool"), sql.pool.to_string());
                s.insert(
                    k("sql.ca_file"),
                    sql.ca_file
                        .as_ref()
                        .map_or("(none)".into(), |c| c.path.display().to_string()),
                );
                s.insert(k("sql.timeout"), d(&sql.timeout));
                s.insert(k("sql.max_rows"), sql.max_rows.to_string());
                s.insert(
                    k("sql.max_result_kib"),
                    (sql.max_result_bytes / 1024).to_string(),
                );
                s.insert(
                    k("sql.migrations"),
                    sql.migrations
                        .as_ref()
                        .map_or("(none)".into(), |p| p.display().to_string()),
                );
            }
            if let Some(mail) = &q.mail {
                let credentials = format!(
                    "{}{}{}",
                    mail.smtp_url,
                    mail.username.as_deref().unwrap_or_default(),
                    mail.password.as_deref().unwrap_or_default()
                );
                s.insert(k("mail.smtp_url"), fingerprint(&credentials));
                s.insert(k("mail.pool"), mail.pool.to_string());
                s.insert(
                    k("mail.ca_file"),
                    mail.ca_file
                        .as_ref()
                        .map_or("(none)".into(), |c| c.path.display().to_string()),
                );
                s.insert(k("mail.timeout"), d(&mail.timeout));
                s.insert(k("mail.from"), mail.from.join(", "));
                s.insert(k("mail.max_per_call"), mail.max_per_call.to_string());
                s.insert(k("mail.max_recipients"), mail.max_recipients.to_string());
                s.insert(k("mail.max_kib"), (mail.max_bytes / 1024).to_string());
            }
        }
        s
    }
}

/// What a reload of queues.toml changes, setting by setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// Settings applied while running: `key: old -> new`. A plugin's own
    /// settings are shown as `key: changed`: they may hold credentials.
    pub applied: Vec<String>,
    /// Settings that only a restart applies: `key: old -> new`.
    pub at_restart: Vec<String>,
}

/// Settings that may hold credentials: a reload logs that they changed,
/// never what to.
const SECRET_SETTINGS: &[&str] = &[".sql.database_url", ".mail.smtp_url"];

/// The password of a URL (`scheme://user:password@host`), if it has one.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_owned())
}

/// Stands for a value that must not be shown: equal values give equal
/// text, so a change shows as one.
fn fingerprint(value: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value.as_bytes());
    format!("(secret {:02x}{:02x})", digest[0], digest[1])
}

/// Settings fixed for the life of a process: every Redis key name derives
/// from them, or the compiled-plugin cache is opened with them.
pub const RESTART_ONLY: &[&str] = &[
    "host.prefix",
    "host.cache_dir",
    "ingress.stream",
    "admin.listen",
    "admin.tls_cert",
    "admin.tls_key",
];

impl ConfigChanges {
    /// The differences between two configurations.
    pub fn between(old: &Config, new: &Config) -> Self {
        let (a, b) = (old.settings(), new.settings());
        let mut changes = ConfigChanges::default();
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            let (from, to) = (a.get(key), b.get(key));
            if from == to {
                continue;
            }
            let show = |v: Option<&String>| v.map_or("(none)".to_string(), |v| v.clone());
            let line =
                if key.contains(".config.") || SECRET_SETTINGS.iter().any(|s| key.ends_with(s)) {
                    let what = match (from, to) {
                        (None, _) => "added",
                        (_, None) => "removed",
                        _ => "changed",
                    };
                    format!("{key}: {what}")
                } else {
                    format!("{key}: {} -> {}", show(from), show(to))
                };
            if RESTART_ONLY.contains(&key.as_str()) {
                changes.at_restart.push(line);
            } else {
                changes.applied.push(line);
            }
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.at_restart.is_empty()
    }
}

/// A TOML syntax error as one line: where, and what.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    ConfigError {
        key: String::new(),
        line: e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
        message: format!("not valid TOML: {}", e.message().trim()),
    }
}

/// Collects errors and warnings while reading the document.
struct Validator<'e> {
    lines: KeyLines,
    /// Reads an environment variable (secrets).
    env: &'e dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// Every plugin file named.
    plugins: BTreeSet<PathBuf>,
}

/// A table being read: remembers which keys were used, so the rest can be
/// reported as unknown.
struct Section<'a> {
    path: String,
    table: &'a toml::Table,
    known: BTreeSet<&'static str>,
}

impl<'a> Section<'a> {
    fn new(path: impl Into<String>, table: &'a toml::Table) -> Self {
        Section {
            path: path.into(),
            table,
            known: BTreeSet::new(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// What durations look like, for error messages.
const DURATION_FORM: &str =
    "write a number and a unit, like \"250ms\", \"5s\", \"10m\", \"2h\" or \"15d\"";

impl Validator<'_> {
    fn problem(&self, key: String, message: impl Into<String>) -> ConfigError {
        let line = self.lines.line_of(&key);
        ConfigError {
            key,
            line,
            message: message.into(),
        }
    }

    fn error(&mut self, key: String, message: impl Into<String>) {
        let e = self.problem(key, message);
        self.errors.push(e);
    }

    fn warn(&mut self, key: String, message: impl Into<String>) {
        let w = self.problem(key, message);
        self.warnings.push(w);
    }

    /// Reads an optional key of type `T`.
    fn get<T: DeserializeOwned>(
        &mut self,
        s: &mut Section<'_>,
        key: &'static str,
        what: &str,
    ) -> Option<T> {
        s.known.insert(key);
        let value = s.table.get(key)?;
        match value.clone().try_into::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(
                    s.key(key),
                    format!("must be {what}, found {}", value.type_str()),
                );
                None
            }
        }
    }

    /// Reads an optional integer within `range`.
    /// `concurrency`: a number (fixed), or `{ min = 2, max = 64 }` (scaled
    /// between them with the backlog). Returns (min, max).
    fn concurrency(&mut self, s: &mut Section<'_>) -> (u32, u32) {
        let range = 1..=i64::from(MAX_CONCURRENCY);
        let Some(toml::Value::Table(t)) = s.table.get("concurrency") else {
            let n = self.int(s, "concurrency", 4, range) as u32;
            return (n, n);
        };
        s.known.insert("concurrency");
        let mut b = Section::new(s.key("concurrency"), t);
        let max = self.get::<i64>(&mut b, "max", "an integer");
        let min = self.int(&mut b, "min", 1, range.clone());
        self.finish(b);
        let Some(max) = max else {
            self.error(
                s.key("concurrency.max"),
                "is required: concurrency = { min = 2, max = 64 } scales between them, a number is fixed",
            );
            return (4, 4);
        };
        if !range.contains(&max) {
            self.error(
                s.key("concurrency.max"),
                format!("must be between 1 and {MAX_CONCURRENCY}, found {max}"),
            );
            return (4, 4);
        }
        if min > max {
            self.error(
                s.key("concurrency.min"),
                format!("must not be more than concurrency.max ({max}), found {min}"),
            );
            return (max as u32, max as u32);
        }
        (min as u32, max as u32)
    }

    fn int(
        &mut self,
        s: &mut Section<'_>,
        key: &'static str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> i64 {
        let Some(n) = self.get::<i64>(s, key, "an integer") else {
            return default;
        };
        if !range.contains(&n) {
            self.error(
                s.key(key),
                format!(
                    "must be between {} and {}, found {n}",
                    range.start(),
                    range.end()
                ),
            );
            return default;
        }
        n
    }

    /// Reads an optional duration, more than zero and at most `max`.
    fn duration(
        &mut self,
        s: &mut Section<'_>,
        key: &'static str,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(text) = self.get::<String>(s, key, &format!("a duration ({DURATION_FORM})"))
        else {
            return default;
        };
        match humantime::parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                self.error(s.key(key), "must be more than zero");
                default
            }
            Ok(d) if d > max => {
                self.error(
                    s.key(key),
                    format!(
                        "{text:?} is longer than the {} allowed",
                        humantime::format_duration(max)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(_) => {
                self.error(
                    s.key(key),
                    format!("{text:?} is not a duration: {DURATION_FORM}"),
                );
                default
            }
        }
    }

    fn table<'t>(&mut self, s: &mut Section<'t>, key: &'static str) -> Option<&'t toml::Table> {
        s.known.insert(key);
        match s.table.get(key)? {
            toml::Value::Table(t) => Some(t),
            other => {
                self.error(
                    s.key(key),
                    format!("must be a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// Reports every key of the section that was never asked for.
    fn finish(&mut self, s: Section<'_>) {
        for key in s.table.keys() {
            if !s.known.contains(key.as_str()) {
                let expected: Vec<_> = s.known.iter().copied().collect();
                self.error(
                    s.key(key),
                    format!("unknown key (expected one of: {})", expected.join(", ")),
                );
            }
        }
    }

    fn config(&mut self, table: &toml::Table, path: &Path, base: &Path) -> Config {
        let mut top = Section::new("", table);
        let empty = toml::Table::new();

        let host = {
            let t = self.table(&mut top, "host");
            let mut s = Section::new("host", t.unwrap_or(&empty));
            let prefix: String = self
                .get(&mut s, "prefix", "a string")
                .unwrap_or_else(|| "switchyard".into());
            if prefix.is_empty() || prefix.contains(char::is_whitespace) {
                self.error(s.key("prefix"), "must be non-empty and without spaces");
            }
            let shutdown_timeout = self.duration(
                &mut s,
                "shutdown_timeout",
                Duration::from_secs(10),
                Duration::from_secs(3600),
            );
            let cache_dir = match self.get::<String>(
                &mut s,
                "cache_dir",
                "a path (\"\" turns the cache off)",
            ) {
                Some(dir) if dir.is_empty() => None,
                Some(dir) => Some(base.join(dir)),
                None => default_cache_dir(),
            };
            let plugin_compile_timeout = self.duration(
                &mut s,
                "plugin_compile_timeout",
                Duration::from_secs(60),
                Duration::from_secs(3600),
            );
            let plugin_compile_memory_mib =
                self.int(&mut s, "plugin_compile_memory_mib", 2048, 256..=65536);
            let max_plugin_mib = self.int(&mut s, "max_plugin_mib", 128, 1..=4096);
            let on_missing_group = match self
                .get::<String>(&mut s, "on_missing_group", "\"recreate\" or \"stop\"")
                .as_deref()
            {
                None | Some("recreate") => MissingGroup::Recreate,
                Some("stop") => MissingGroup::Stop,
                Some(other) => {
                    self.error(
                        s.key("on_missing_group"),
                        format!("must be \"recreate\" or \"stop\", found {other:?}"),
                    );
                    MissingGroup::Recreate
                }
            };
            self.finish(s);
            HostSettings {
                prefix,
                shutdown_timeout,
                on_missing_group,
                cache_dir,
                plugin_compile_timeout,
                plugin_compile_memory_mib: plugin_compile_memory_mib as u32,
                max_plugin_bytes: max_plugin_mib as u64 * 1024 * 1024,
            }
        };

        let ingress = {
            let t = self.table(&mut top, "ingress");
            let mut s = Section::new("ingress", t.unwrap_or(&empty));
            let d = IngressSettings::default();
            let stream: String = self.get(&mut s, "stream", "a string").unwrap_or(d.stream);
            if stream.is_empty() {
                self.error(s.key("stream"), "must not be empty");
            }
            let batch = self.int(&mut s, "batch", d.batch as i64, 1..=10_000);
            let visibility_timeout = self.duration(
                &mut s,
                "visibility_timeout",
                d.visibility_timeout,
                MAX_DURATION,
            );
            let max_entry_kib = self.int(
                &mut s,
                "max_entry_kib",
                (d.max_entry_bytes / 1024) as i64,
                1..=MAX_ENTRY_KIB as i64,
            );
            self.finish(s);
            IngressSettings {
                stream,
                batch: batch as usize,
                visibility_timeout,
                max_entry_bytes: max_entry_kib as usize * 1024,
            }
        };

        let retention = {
            let t = self.table(&mut top, "retention");
            let mut s = Section::new("retention", t.unwrap_or(&empty));
            // Retention may be long: ten years.
            let long = MAX_DURATION * 10;
            let r = RetentionSettings {
                interval: self.duration(
                    &mut s,
                    "interval",
                    Duration::from_secs(60),
                    Duration::from_secs(24 * 3600),
                ),
                keep_handled: self.duration(
                    &mut s,
                    "keep_handled",
                    Duration::from_secs(3600),
                    long,
                ),
                dead_letter_age: self.duration(
                    &mut s,
                    "dead_letter_age",
                    Duration::from_secs(15 * 24 * 3600),
                    long,
                ),
                dead_letter_max_len: self.int(&mut s, "dead_letter_max_len", 0, 0..=i64::MAX)
                    as u64,
                idle_consumer: self.duration(
                    &mut s,
                    "idle_consumer",
                    Duration::from_secs(3600),
                    long,
                ),
            };
            self.finish(s);
            r
        };

        let admin = self.table(&mut top, "admin").map(|t| {
            let mut s = Section::new("admin", t);
            let listen = match self.get::<String>(&mut s, "listen", "an address, e.g. \"127.0.0.1:9464\"") {
                None => std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
                Some(text) => match text.parse::<std::net::SocketAddr>() {
                    Ok(addr) => {
                        if !addr.ip().is_loopback() {
                            self.warn(
                                s.key("listen"),
                                "is not a loopback address: /metrics, /healthz and /readyz are open to that network (the dashboard and its API need a token)",
                            );
                        }
                        addr
                    }
                    Err(_) => {
                        self.error(
                            s.key("listen"),
                            format!("{text:?} is not an address and port, e.g. \"127.0.0.1:9464\""),
                        );
                        std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
                    }
                },
            };
            let stats_interval = self.duration(
                &mut s,
                "stats_interval",
                                Duration::from_secs(5),
                Duration::from_secs(600),
            );
            let tls = self.admin_tls(&mut s, base);
            let hosts = self
                .get::<Vec<String>>(&mut s, "hosts", "an array of host names, e.g. [\"switchyard.internal\"]")
                .unwrap_or_default();
            for h in &hosts {
                if crate::grants::request_host(h).is_err() || h.contains(':') {
                    self.error(
                        s.key("hosts"),
                        format!("{h:?} is not a host name (write the name alone, without scheme or port)"),
                    );
                }
            }
            self.finish(s);
            let token = |name: &str| {
                (self.env)(name).filter(|t| !t.is_empty()).map(|value| Secret {
                    key: "admin".into(),
                    env: name.into(),
                    value,
                })
            };
            AdminSettings {
                listen,
                stats_interval,
                tls,
                token: token("SWITCHYARD_ADMIN_TOKEN"),
                read_token: token("SWITCHYARD_ADMIN_READ_TOKEN"),
                hosts: hosts.iter().map(|h| h.trim_end_matches('.').to_ascii_lowercase()).collect(),
            }
        });

        let mut queues = BTreeMap::new();
        match self.table(&mut top, "queues") {
            None => self.error("queues".into(), "at least one queue must be declared"),
            Some(t) if t.is_empty() => {
                self.error("queues".into(), "at least one queue must be declared")
            }
            Some(t) => {
                for (name, value) in t {
                    let key = format!("queues.{name}");
                    let toml::Value::Table(qt) = value else {
                        self.error(key, format!("must be a table, found {}", value.type_str()));
                        continue;
                    };
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                    {
                        self.error(
                            key.clone(),
                            "queue names use only letters, digits, '_', '-' and '.'",
                        );
                    }
                    if let Some(q) = self.queue(name, qt, base, &ingress) {
                        queues.insert(name.clone(), q);
                    }
                }
            }
        }

        let mut routes = BTreeMap::new();
        match self.table(&mut top, "routes") {
            None => self.error("routes".into(), "at least one route must be declared"),
            Some(t) => {
                for (message_type, value) in t {
                    let key = format!("routes.\"{message_type}\"");
                    if message_type.trim().is_empty() {
                        self.error(key.clone(), "a message type must not be empty");
                    }
                    let targets: Vec<String> = match value.clone().try_into() {
                        Ok(v) => v,
                        Err(_) => {
                            self.error(key, "must be an array of queue names");
                            continue;
                        }
                    };
                    if targets.is_empty() {
                        self.error(key.clone(), "routes to no queue");
                    }
                    let mut seen = BTreeSet::new();
                    for target in &targets {
                        if !seen.insert(target.as_str()) {
                            self.error(key.clone(), format!("names queue {target:?} twice"));
                        }
                        let declared = table
                            .get("queues")
                            .and_then(|q| q.as_table())
                            .is_some_and(|q| q.contains_key(target));
                        if !declared {
                            self.error(
                                key.clone(),
                                format!("routes to undeclared queue {target:?}"),
                            );
                        }
                    }
                    let lower = message_type.to_ascii_lowercase();
                    if routes.insert(lower, targets).is_some() {
                        self.error(
                            key,
                            "declared twice (message types match without regard to case)",
                        );
                    }
                }
            }
        }
        self.finish(top);

        Config {
            path: path.to_owned(),
            host,
            ingress,
            retention,
            admin,
            routes,
            queues,
            warnings: Vec::new(),
        }
    }

    fn queue(
        &mut self,
        name: &str,
        table: &toml::Table,
        base: &Path,
        ingress: &IngressSettings,
    ) -> Option<QueueConfig> {
        let mut s = Section::new(format!("queues.{name}"), table);
        let before = self.errors.len();

        let plugin = match self.get::<String>(&mut s, "plugin", "a path to a .wasm file") {
            None if !table.contains_key("plugin") => {
                self.error(s.key("plugin"), "is required");
                None
            }
            None => None,
            Some(p) if let Some(found) = crate::plugin::builtin(&p) => {
                if let Err(known) = found {
                    self.error(
                        s.key("plugin"),
                        format!("no built-in handler {p:?} (there are: {known})"),
                    );
                }
                Some(PathBuf::from(p))
            }
            Some(p) => {
                let resolved = base.join(&p);
                self.plugins.insert(resolved.clone());
                if resolved.exists() && !resolved.is_file() {
                    self.error(
                        s.key("plugin"),
                        format!("{} is not a regular file", resolved.display()),
                    );
                } else if !resolved.is_file() {
                    // The shipped queues.toml names the plugins this
                    // repository builds.
                    let hint = if p.contains("wasm32-wasip2") {
                        " (build the shipped plugins with ./scripts/build-plugins.sh)"
                    } else {
                        ""
                    };
                    self.error(
                        s.key("plugin"),
                        format!("plugin file {} does not exist{hint}", resolved.display()),
                    );
                }
                Some(resolved)
            }
        };
        let (concurrency_min, concurrency) = self.concurrency(&mut s);
        let handler_timeout = self.duration(
            &mut s,
            "handler_timeout",
            Duration::from_secs(10),
            Duration::from_secs(24 * 3600),
        );
        let memory_mib = self.int(&mut s, "memory_mib", 64, 1..=i64::from(MAX_MEMORY_MIB));
        let ingress_kib = (ingress.max_entry_bytes / 1024) as i64;
        let max_entry_kib = self.int(
            &mut s,
            "max_entry_kib",
            ingress_kib,
            1..=MAX_ENTRY_KIB as i64,
        );
        if max_entry_kib > ingress_kib {
            self.warn(
                s.key("max_entry_kib"),
                format!(
                    "{max_entry_kib} is more than ingress.max_entry_kib ({ingress_kib}), which the router applies first"
                ),
            );
        }
        let visibility_timeout = self.duration(
            &mut s,
            "visibility_timeout",
            Duration::from_secs(60),
            MAX_DURATION,
        );
        if visibility_timeout < Duration::from_secs(1) {
            // Leases are renewed at a third of it: shorter would spend the
            // host on renewals.
            self.error(s.key("visibility_timeout"), "must be at least 1s");
        }
        let max_attempts = self.int(&mut s, "max_attempts", 15, 1..=10_000);
        let retry_quick = self.int(&mut s, "retry_quick", 3, 0..=100);
        let retry_quick_delay = self.duration(
            &mut s,
            "retry_quick_delay",
            Duration::from_millis(100),
            MAX_DURATION,
        );
        let retry_delay =
            self.duration(&mut s, "retry_delay", Duration::from_secs(30), MAX_DURATION);
        // By default the backoff grows as far as a retry can wait (see
        // below).
        let retry_delay_max = self.duration(
            &mut s,
            "retry_delay_max",
            visibility_timeout.max(retry_delay),
            MAX_DURATION,
        );
        if retry_delay_max < retry_delay {
            self.error(
                s.key("retry_delay_max"),
                "must not be shorter than retry_delay",
            );
        }
        // A retry is scheduled by setting the message's idle clock so that
        // it becomes claimable after the delay: no delay can be longer than
        // the visibility timeout.
        for (key, delay) in [
            ("retry_delay_max", retry_delay_max),
            ("retry_delay", retry_delay),
            ("retry_quick_delay", retry_quick_delay),
        ] {
            if delay > visibility_timeout && self.errors.len() == before {
                self.warn(
                    s.key(key),
                    format!(
                        "{} is longer than visibility_timeout ({}); retries wait at most visibility_timeout",
                        humantime::format_duration(delay),
                        humantime::format_duration(visibility_timeout)
                    ),
                );
                break;
            }
        }
        let reuse_instances: bool = self
            .get(&mut s, "reuse_instances", "true or false")
            .unwrap_or(false);
        let (plugin_config, secrets) = match self.table(&mut s, "config") {
            Some(t) => self.plugin_config(&s.key("config"), t),
            None => Default::default(),
        };
        let http = self.http_settings(&mut s, base, handler_timeout);
        let keyvalue = self.table(&mut s, "keyvalue").map(|t| {
            let mut k = Section::new(s.key("keyvalue"), t);
            let grant = KeyValueGrant {
                max_keys: self.int(&mut k, "max_keys", 10_000, 1..=100_000_000) as u64,
                max_bytes: self.int(&mut k, "max_kib", 10 * 1024, 1..=64 * 1024 * 1024) as u64
                    * 1024,
                ttl: k
                    .table
                    .contains_key("ttl")
                    .then(|| self.duration(&mut k, "ttl", Duration::ZERO, MAX_DURATION * 10)),
            };
            self.finish(k);
            grant
        });
        let publish = PublishGrant {
            types: self
                .get::<Vec<String>>(
                    &mut s,
                    "publish",
                    "an array of message types (\"*\" for any)",
                )
                .unwrap_or_default()
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
            max_per_call: self.int(&mut s, "max_publish_per_call", 16, 1..=1000) as u32,
        };
        if publish.types.iter().any(String::is_empty) {
            self.error(s.key("publish"), "a message type must not be empty");
        }
        let max_hops = self.int(&mut s, "max_hops", 8, 1..=1000) as u32;
        let mut secrets = secrets;
        let sql = self
            .table(&mut s, "sql")
            .and_then(|t| self.sql_settings(&s.key("sql"), t, base, handler_timeout, &mut secrets));
        let mail = self.table(&mut s, "mail").and_then(|t| {
            self.mail_settings(&s.key("mail"), t, base, handler_timeout, &mut secrets)
        });
        self.finish(s);

        if self.errors.len() > before {
            return None;
        }
        Some(QueueConfig {
            name: name.to_owned(),
            plugin: plugin?,
            concurrency,
            concurrency_min,
            handler_timeout,
            memory_mib: memory_mib as u32,
            max_entry_bytes: max_entry_kib as usize * 1024,
            visibility_timeout,
            max_attempts: max_attempts as u32,
            retry_quick: retry_quick as u32,
            retry_quick_delay,
            retry_delay,
            retry_delay_max,
            reuse_instances,
            plugin_config,
            secrets,
            http,
            keyvalue,
            publish,
            max_hops,
            sql,
            mail,
        })
    }

    /// A string that may be a secret: `"text"` or `{ env = "NAME" }`. A
    /// secret's value (and the password in it, for a URL) is added to
    /// `secrets`, to be masked in what plugins hand back.
    fn maybe_secret(
        &mut self,
        s: &mut Section<'_>,
        key: &'static str,
        secrets: &mut Vec<Secret>,
    ) -> Option<String> {
        s.known.insert(key);
        let value = s.table.get(key)?;
        let path = s.key(key);
        let (value, env) = match value {
            toml::Value::String(text) => (text.clone(), None),
            toml::Value::Table(t) => {
                let var = match (t.get("env"), t.len()) {
                    (Some(toml::Value::String(var)), 1) if !var.is_empty() => var.clone(),
                    _ => {
                        self.error(
                            path,
                            "a secret is written { env = \"NAME\" }, NAME an environment variable",
                        );
                        return None;
                    }
                };
                match (self.env)(&var) {
                    Some(value) => (value, Some(var)),
                    None => {
                        self.error(
                            path,
                            format!("the environment variable {var} is not set (or not UTF-8)"),
                        );
                        return None;
                    }
                }
            }
            other => {
                self.error(
                    path,
                    format!(
                        "must be a string or {{ env = \"NAME\" }}, found {}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        if value.is_empty() {
            // `status` reads no secrets and passes empty ones.
            self.warn(path, "is empty");
        }
        let env = env.unwrap_or_default();
        if let Some(password) = url_password(&value) {
            secrets.push(Secret {
                key: format!("{key} (password)"),
                env: env.clone(),
                value: password,
            });
        }
        secrets.push(Secret {
            key: key.to_owned(),
            env,
            value: value.clone(),
        });
        Some(value)
    }

    /// `[queues.X.sql]`.
    fn sql_settings(
        &mut self,
        path: &str,
        table: &toml::Table,
        base: &Path,
        handler_timeout: Duration,
        secrets: &mut Vec<Secret>,
    ) -> Option<SqlSettings> {
        let mut s = Section::new(path, table);
        let before = self.errors.len();
        let url = self.maybe_secret(&mut s, "database_url", secrets);
        if url.is_none() && !table.contains_key("database_url") {
            self.error(s.key("database_url"), "is required");
        }
        let parsed = url
            .as_ref()
            .filter(|u| !u.is_empty())
            .map(|u| (u, u.parse::<tokio_postgres::Config>()));
        match &parsed {
            Some((url, Err(_))) if url.contains("sslmode=verify-") => self.error(
                s.key("database_url"),
                "sslmode: write sslmode=require; the host always verifies the server's certificate and name (as verify-full does)",
            ),
            Some((_, Err(e))) => self.error(
                s.key("database_url"),
                format!(
                    "is not a PostgreSQL URL (postgres://user:password@host:port/database): {e}"
                ),
            ),
            _ => {}
        }
        let ca_file = self.ca_file(&mut s, base, "ca_file");
        if ca_file.is_some()
            && let Some((_, Ok(pg))) = &parsed
            && pg.get_ssl_mode() != tokio_postgres::config::SslMode::Require
        {
            self.error(
                s.key("ca_file"),
                "is set, but database_url does not ask for TLS (add ?sslmode=require)",
            );
        }
        let pool = self.int(&mut s, "pool", 4, 1..=256) as u32;
        let timeout = self.duration(
            &mut s,
            "timeout",
            Duration::from_secs(5).min(handler_timeout),
            MAX_DURATION,
        );
        if timeout > handler_timeout {
            self.warn(
                s.key("timeout"),
                "is longer than handler_timeout; a statement never runs past the handler's deadline",
            );
        }
        let max_rows = self.int(&mut s, "max_rows", 10_000, 1..=10_000_000) as u32;
        let max_result_kib = self.int(&mut s, "max_result_kib", 4096, 1..=1024 * 1024) as usize;
        let migrations = self
            .get::<String>(&mut s, "migrations", "a folder of .sql files")
            .map(|p| base.join(p));
        if let Some(dir) = &migrations
            && !dir.is_dir()
        {
            self.error(
                s.key("migrations"),
                format!("{} is not a folder", dir.display()),
            );
        }
        self.finish(s);
        if self.errors.len() > before {
            return None;
        }
        Some(SqlSettings {
            database_url: url?,
            ca_file,
            pool,
            timeout,
            max_rows,
            max_result_bytes: max_result_kib * 1024,
            migrations,
        })
    }

    /// `[admin] tls_cert` and `tls_key`: both or neither, resolved against
    /// the config file's folder.
    fn admin_tls(&mut self, s: &mut Section, base: &Path) -> Option<AdminTls> {
        let cert = self.get::<String>(s, "tls_cert", "a path to a PEM certificate chain");
        let key = self.get::<String>(s, "tls_key", "a path to a PEM private key");
        let (cert, key) = match (cert, key) {
            (None, None) => return None,
            (Some(_), None) => {
                self.error(s.key("tls_key"), "is needed with tls_cert");
                return None;
            }
            (None, Some(_)) => {
                self.error(s.key("tls_cert"), "is needed with tls_key");
                return None;
            }
            (Some(c), Some(k)) => (base.join(c), base.join(k)),
        };
        let cert_pem = crate::files::read(&cert, MAX_CA_FILE_BYTES)
            .map_err(|e| self.error(s.key("tls_cert"), format!("{}: {e}", cert.display())))
            .ok();
        let key_pem = crate::files::read(&key, MAX_KEY_FILE_BYTES)
            .map_err(|e| self.error(s.key("tls_key"), format!("{}: {e}", key.display())))
            .ok();
        let (cert_pem, key_pem) = (cert_pem?, key_pem?);
        if let Ok(meta) = std::fs::metadata(&key)
            && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0
        {
            self.warn(
                s.key("tls_key"),
                format!(
                    "{} can be read by other users than its owner (chmod 600 it)",
                    key.display()
                ),
            );
        }

        match crate::tls::server_config(&cert_pem, &key_pem) {
            Ok(server) => {
                use sha2::Digest;
                let mut digest = sha2::Sha256::new();
                digest.update(&cert_pem);
                digest.update(&key_pem);
                Some(AdminTls {
                    cert,
                    key,
                    server: Arc::new(server),
                    digest: digest.finalize().into(),
                })
            }
            Err(crate::tls::ServerTlsError::Cert(e)) => {
                self.error(s.key("tls_cert"), format!("{}: {e}", cert.display()));
                None
            }
            Err(crate::tls::ServerTlsError::Key(e)) => {
                self.error(s.key("tls_key"), format!("{}: {e}", key.display()));
                None
            }
        }
    }

    /// `ca_file`: a PEM file of CA certificates, resolved against the
    /// config file's folder.
    fn ca_file(&mut self, s: &mut Section, base: &Path, key: &'static str) -> Option<CaFile> {
        let path = self.get::<String>(s, key, "a path to a PEM file of CA certificates")?;
        CaFile::read(&base.join(path))
            .map_err(|e| self.error(s.key(key), e))
            .ok()
    }

    /// `[queues.X.mail]`.
    fn mail_settings(
        &mut self,
        path: &str,
        table: &toml::Table,
        base: &Path,
        handler_timeout: Duration,
        secrets: &mut Vec<Secret>,
    ) -> Option<MailSettings> {
        let mut s = Section::new(path, table);
        let before = self.errors.len();
        let url = self.maybe_secret(&mut s, "smtp_url", secrets);
        if url.is_none() && !table.contains_key("smtp_url") {
            self.error(s.key("smtp_url"), "is required");
        }
        let username = self.maybe_secret(&mut s, "username", secrets);
        let password = self.maybe_secret(&mut s, "password", secrets);
        if let Some(url) = url.as_ref().filter(|u| !u.is_empty()) {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("smtp" | "smtps")) {
                self.error(
                    s.key("smtp_url"),
                    "must be smtp://host:port (add ?tls=required for STARTTLS) or smtps://host:port",
                );
            } else {
                match crate::plugin::smtp::Relay::parse(url, username.as_deref(), password.as_deref())
                {
                    Err(e) => self.error(s.key("smtp_url"), format!("is not an SMTP URL: {e}")),
                    Ok(relay) if relay.credentials_in_clear() => self.error(
                        s.key("smtp_url"),
                        "would send the relay's credentials without TLS (the relay is not on loopback): add ?tls=required for STARTTLS, or use smtps://",
                    ),
                    Ok(_) => {}
                }
            }
        }
        if username.is_some() != password.is_some() {
            self.error(
                s.key(if username.is_some() {
                    "password"
                } else {
                    "username"
                }),
                "username and password go together",
            );
        }
        let ca_file = self.ca_file(&mut s, base, "ca_file");
        let pool = self.int(&mut s, "pool", 4, 0..=256) as u32;
        let timeout = self.duration(
            &mut s,
            "timeout",
            Duration::from_secs(30).min(handler_timeout),
            MAX_DURATION,
        );
        if timeout > handler_timeout {
            self.warn(
                s.key("timeout"),
                "is longer than handler_timeout; a mail is never sent past the handler's deadline",
            );
        }
        let from = self
            .get::<Vec<String>>(
                &mut s,
                "from",
                "an array of addresses (\"@domain\" for any at it)",
            )
            .unwrap_or_default();
        for f in &from {
            if !f.contains('@') || f.chars().any(char::is_whitespace) {
                self.error(
                    s.key("from"),
                    format!("{f:?} is neither an address nor \"@domain\""),
                );
            }
        }
        let max_per_call = self.int(&mut s, "max_per_call", 10, 1..=1000) as u32;
        let max_recipients = self.int(&mut s, "max_recipients", 50, 1..=10_000) as u32;
        let max_kib = self.int(&mut s, "max_kib", 1024, 1..=64 * 1024) as usize;
        self.finish(s);
        if self.errors.len() > before {
            return None;
        }
        Some(MailSettings {
            smtp_url: url?,
            username,
            password,
            ca_file,
            pool,
            timeout,
            from,
            max_per_call,
            max_recipients,
            max_bytes: max_kib * 1024,
        })
    }

    /// The `[queues.X.config]` table as JSON, a value written
    /// `{ env = "NAME" }` read from the environment.
    fn plugin_config(
        &mut self,
        key: &str,
        table: &toml::Table,
    ) -> (serde_json::Map<String, serde_json::Value>, Vec<Secret>) {
        let mut map = serde_json::Map::new();
        let mut secrets = Vec::new();
        for (name, value) in table {
            let env = match value {
                toml::Value::Table(t) if t.contains_key("env") => t,
                other => {
                    let json = serde_json::to_value(other).unwrap_or(serde_json::Value::Null);
                    map.insert(name.clone(), json);
                    continue;
                }
            };
            let path = format!("{key}.{name}");
            let var = match (env.get("env"), env.len()) {
                (Some(toml::Value::String(var)), 1) if !var.is_empty() => var.clone(),
                _ => {
                    self.error(
                        path,
                        "a secret is written { env = \"NAME\" }, NAME an environment variable",
                    );
                    continue;
                }
            };
            match (self.env)(&var) {
                Some(value) => {
                    map.insert(name.clone(), serde_json::Value::String(value.clone()));
                    secrets.push(Secret {
                        key: name.clone(),
                        env: var,
                        value,
                    });
                }
                None => self.error(
                    path,
                    format!("the environment variable {var} is not set (or not UTF-8)"),
                ),
            }
        }
        (map, secrets)
    }

    /// The queue's outbound HTTP settings.
    fn http_settings(
        &mut self,
        s: &mut Section<'_>,
        base: &Path,
        handler_timeout: Duration,
    ) -> HttpSettings {
        let d = HttpSettings::default();
        let mut allowed = Vec::new();
        for entry in self
            .get::<Vec<String>>(s, "allowed_hosts", "an array of \"scheme://host[:port]\"")
            .unwrap_or_default()
        {
            match crate::grants::AllowedHost::parse(&entry) {
                Ok(a) => allowed.push(a),
                Err(e) => self.error(s.key("allowed_hosts"), e),
            }
        }
        let timeout = self.duration(
            s,
            "http_timeout",
            d.timeout.min(handler_timeout),
            MAX_DURATION,
        );
        if timeout > handler_timeout {
            self.warn(
                s.key("http_timeout"),
                "is longer than handler_timeout; a request never runs past the handler's deadline",
            );
        }
        HttpSettings {
            grant: crate::grants::HttpGrant { allowed },
            timeout,
            max_response_bytes: self.int(s, "max_response_kib", 1024, 1..=1024 * 1024) as usize
                * 1024,
            max_requests: self.int(s, "max_requests_per_call", 20, 1..=10_000) as u32,
            max_connections_per_host: self.int(s, "max_connections_per_host", 8, 1..=1024) as u32,
            keep_alive: self
                .get(s, "http_keep_alive", "true or false")
                .unwrap_or(d.keep_alive),
            ca_file: self.ca_file(s, base, "http_ca_file"),
        }
    }
}

/// Finds the line of a dotted key path in the source text, for error messages.
struct KeyLines {
    text: String,
}

impl KeyLines {
    fn new(text: &str) -> Self {
        KeyLines {
            text: text.to_owned(),
        }
    }

    fn line_of(&self, key: &str) -> Option<usize> {
        let doc = toml::de::DeTable::parse(&self.text).ok()?;
        let mut table = doc.get_ref();
        let mut span = None;
        for part in split_key(key) {
            let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
            span = Some(k.span());
            match v.get_ref() {
                toml::de::DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        let start = span?.start;
        Some(self.text[..start].matches('\n').count() + 1)
    }
}

/// Splits `routes."chat.ended"` into `routes` and `chat.ended`.
fn split_key(key: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            parts.push(&quoted[..end]);
            rest = quoted.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            parts.push(&rest[..end]);
            rest = &rest[end..];
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let dir = std::env::temp_dir();
        let plugin = dir.join("switchyard-config-test.wasm");
        std::fs::write(&plugin, b"\0asm").unwrap();
        Config::parse(
            &text.replace("PLUGIN", plugin.to_str().unwrap()),
            &dir.join("queues.toml"),
        )
    }

    #[test]
    fn reads_a_valid_file_with_defaults() {
        let c = parse(
            r#"
            [routes]
            "Chat.Ended" = ["Email", "Persistence"]
            [queues.Email]
            plugin = "PLUGIN"
            [queues.Persistence]
            plugin = "PLUGIN"
            concurrency = 2
            handler_timeout = "250ms"
            max_entry_kib = 64
            [queues.Persistence.config]
            table = "chats"
            "#,
        )
        .unwrap();
        assert_eq!(c.host.prefix, "switchyard");
        assert_eq!(c.ingress.stream, "chat:events");
        assert_eq!(c.ingress.max_entry_bytes, 1024 * 1024);
        assert_eq!(c.routes["chat.ended"], ["Email", "Persistence"]);
        let p = &c.queues["Persistence"];
        assert_eq!(p.concurrency, 2);
        assert_eq!(p.handler_timeout, Duration::from_millis(250));
        assert_eq!(p.max_entry_bytes, 64 * 1024);
        assert_eq!(p.plugin_config["table"], "chats");
        assert_eq!(c.queues["Email"].concurrency, 4);
        assert_eq!(c.queues["Email"].max_entry_bytes, 1024 * 1024);
    }

    #[test]
    fn reports_every_error_with_its_key_and_line_in_line_order() {
        let err = parse(
            r#"
            [host]
            prefx = "x"
            [routes]
            "chat.ended" = ["Email", "Nowhere"]
            [queues.Email]
            plugin = "missing.wasm"
            concurrency = 0
            colour = "blue"
            handler_timeout = "soon"
            "#,
        )
        .unwrap_err();
        let text = err.to_string();
        let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "host.prefx",
                "routes.\"chat.ended\"",
                "queues.Email.plugin",
                "queues.Email.concurrency",
                "queues.Email.colour",
                "queues.Email.handler_timeout",
            ],
            "{text}"
        );
        let lines: Vec<usize> = err.errors.iter().map(|e| e.line.unwrap()).collect();
        assert_eq!(lines, [3, 5, 7, 8, 9, 10], "{text}");
        assert!(text.contains("undeclared queue \"Nowhere\""), "{text}");
        assert!(text.contains("line 3: host.prefx: unknown key"), "{text}");
        assert!(
            text.contains("line 8: queues.Email.concurrency: must be between 1 and 1024, found 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "line 10: queues.Email.handler_timeout: \"soon\" is not a duration: write a number and a unit, like \"250ms\""
            ),
            "{text}"
        );
    }

    #[test]
    fn a_syntax_error_is_one_line_with_its_line_number() {
        let err = parse("[routes]\n\"a\" = [\"A\"]\n[queues.A\nplugin = \"x\"\n").unwrap_err();
        assert_eq!(err.errors.len(), 1);
        let e = err.errors[0].to_string();
        assert!(e.starts_with("line 3: not valid TOML: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn durations_are_bounded() {
        let err = parse(
            r#"
            [routes]
            "a" = ["Q"]
            [queues.Q]
            plugin = "PLUGIN"
            handler_timeout = "500000000000y"
            retry_delay = "2y"
            "#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("queues.Q.handler_timeout: \"500000000000y\" is"),
            "{text}"
        );
        assert!(
            text.contains("queues.Q.retry_delay: \"2y\" is longer than the 1year allowed"),
            "{text}"
        );
    }

    #[test]
    fn contradictions_are_warnings() {
        let c = parse(
            r#"
            [ingress]
            max_entry_kib = 100
            [routes]
            "a" = ["Q"]
            [queues.Q]
            plugin = "PLUGIN"
            visibility_timeout = "1m"
            retry_delay = "30s"
            retry_delay_max = "10m"
            max_entry_kib = 200
            "#,
        )
        .unwrap();
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("queues.Q.retry_delay_max: 10m is longer than visibility_timeout (1m)"),
            "{w:?}"
        );
        assert!(
            w[1].contains("queues.Q.max_entry_kib: 200 is more than ingress.max_entry_kib (100)"),
            "{w:?}"
        );
    }

    #[test]
    fn a_missing_shipped_plugin_says_how_to_build_it() {
        let err = parse(
            r#"
            [routes]
            "a" = ["Q"]
            [queues.Q]
            plugin = "target/wasm32-wasip2/release/nothing.wasm"
            "#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(
                "does not exist (build the shipped plugins with ./scripts/build-plugins.sh)"
            ),
            "{err}"
        );
    }

    #[test]
    fn changes_say_what_applies_now_and_what_at_restart() {
        let old = parse(
            r#"
            [routes]
            "a" = ["Q"]
            [queues.Q]
            plugin = "PLUGIN"
            "#,
        )
        .unwrap();
        let new = parse(
            r#"
            [host]
            prefix = "other"
            [ingress]
            batch = 10
            [retention]
            interval = "5s"
                        [routes]
            "a" = ["Q"]
            [queues.Q]
            plugin = "PLUGIN"
            concurrency = 8
            [queues.Q.config]
            token = "s3cret"
            "#,
        )
        .unwrap();
        let c = ConfigChanges::between(&old, &new);
        assert_eq!(c.at_restart, ["host.prefix: switchyard -> other"]);
        assert_eq!(
            c.applied,
            [
                "ingress.batch: 256 -> 10",
                "queues.Q.concurrency: 4 -> 8",
                "queues.Q.config.token: added",
                "retention.interval: 1m -> 5s",
            ]
        );
        assert!(ConfigChanges::between(&old, &old).is_empty());
    }

    #[test]
    fn accepts_a_built_in_handler_and_names_the_known_ones() {
        let c = parse(
            r#"
            [routes]
            "a" = ["Discard"]
            [queues.Discard]
            plugin = "builtin:noop"
            "#,
        )
        .unwrap();
        assert_eq!(c.queues["Discard"].plugin, PathBuf::from("builtin:noop"));
        let err = parse(
            r#"
            [routes]
            "a" = ["Q"]
            [queues.Q]
            plugin = "builtin:nothing"
            "#,
        )
        .unwrap_err();
        assert_eq!(err.errors[0].key, "queues.Q.plugin");
        let text = err.to_string();
        assert!(
            text.contains("no built-in handler \"builtin:nothing\" (there are: builtin:noop, builtin:http-post)"),
            "{text}"
        );
    }

    #[test]
    fn rejects_a_visibility_timeout_under_a_second() {
        let err = parse(
            r#"
            [routes]
            "a" = ["Q"]
            [queues.Q]
            plugin = "PLUGIN"
            visibility_timeout = "500ms"
            "#,
        )
        .unwrap_err();
        assert_eq!(err.errors[0].key, "queues.Q.visibility_timeout");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = parse(
            r#"
            [routes]
            "a" = ["Q"]
            [queues.Q]
            plugin = "PLUGIN"
            retry_quick = 2
            retry_quick_delay = "250ms"
            retry_delay = "1s"
            retry_delay_max = "5s"
            "#,
        )
        .unwrap();
        let q = &c.queues["Q"];
        let delays: Vec<u128> = (2..9).map(|a| q.backoff(a).as_millis()).collect();
        assert_eq!(delays, [250, 250, 1000, 2000, 4000, 5000, 5000]);
    }
}
