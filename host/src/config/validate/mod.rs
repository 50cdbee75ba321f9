//! Checking queues.toml's settings and turning them into the model: pure,
//! every error at once, each with its key and line; settings valid alone
//! but working against each other are warnings. What needs I/O (secrets,
//! files) is left for [`super::resolve`], listed in [`Validated`].

mod context;
mod grants;
mod queue;
mod redis;

use context::Context;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults as d;
use super::parse::{Lines, join};
use super::raw::{RawAdmin, RawConfig, RawHost, RawIngress, RawRetention, Setting};
use super::{
    AdminSettings, AdminTls, Config, ConfigError, HostSettings, IngressSettings, MAX_DURATION,
    MAX_ENTRY_KIB, MissingGroup, RetentionSettings,
};

/// A setting whose value comes from the environment, to be read by
/// [`super::resolve`].
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its key path, for errors.
    pub key: String,
    /// The environment variable.
    pub var: String,
    pub target: Target,
}

/// Where a [`Pending`] value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    PluginConfig {
        queue: String,
        name: String,
    },
    DatabaseUrl(String),
    SmtpUrl(String),
    MailUser(String),
    MailPassword(String),
    /// A credential of `[redis]`.
    Redis(RedisSecret),
}

/// Which credential of `[redis]` a [`Pending`] value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisSecret {
    Username,
    Password,
    SentinelUsername,
    SentinelPassword,
}

/// A file the configuration names, to be read or checked by
/// [`super::resolve`] (whether or not the rest of its section is valid:
/// every problem is reported at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Its key path.
    pub key: String,
    pub path: PathBuf,
    pub kind: FileKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Plugin,
    /// A PEM file of CA certificates.
    Ca,
    /// A folder (of migrations).
    Folder,
    AdminCert,
    AdminKey,
}

/// The model as far as the file alone says it: secrets unread, files
/// unread, plugin files unchecked.
#[derive(Debug)]
pub struct Validated {
    pub config: Config,
    pub pending: Vec<Pending>,
    pub files: Vec<FileRef>,
    /// `host.cache_dir` was not written: the default, from the environment.
    pub default_cache_dir: bool,
    pub errors: Vec<ConfigError>,
    /// Every plugin file named, resolved (to watch, when the file is
    /// refused).
    pub plugins: BTreeSet<PathBuf>,
}

/// What durations look like, for error messages.
pub(super) const DURATION_FORM: &str =
    "write a number and a unit, like \"250ms\", \"5s\", \"10m\", \"2h\" or \"15d\"";

/// Collects errors and warnings while checking.
pub(super) struct Checker<'l> {
    lines: &'l Lines,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigError>,
    pub(super) files: Vec<FileRef>,
}

impl<'l> Checker<'l> {
    pub(super) fn new(lines: &'l Lines) -> Self {
        Checker {
            lines,
            errors: Vec::new(),
            warnings: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Notes a file for resolve to read or check.
    pub(super) fn file(&mut self, key: &str, path: PathBuf, kind: FileKind) {
        self.files.push(FileRef {
            key: key.to_owned(),
            path,
            kind,
        });
    }

    fn problem(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_owned(),
            line: self.lines.of(key),
            message: message.into(),
        }
    }

    pub(super) fn error(&mut self, key: &str, message: impl Into<String>) {
        let e = self.problem(key, message);
        self.errors.push(e);
    }

    pub(super) fn warn(&mut self, key: &str, message: impl Into<String>) {
        let w = self.problem(key, message);
        self.warnings.push(w);
    }

    /// A setting's value, or `None` (after saying so when it is of another
    /// type: `what` says what it should be).
    pub(super) fn get<'s, T>(
        &mut self,
        key: &str,
        setting: Option<&'s Setting<T>>,
        what: &str,
    ) -> Option<&'s T> {
        match &setting?.value {
            Ok(v) => Some(v),
            Err(found) => {
                self.error(key, format!("must be {what}, found {found}"));
                None
            }
        }
    }

    /// An integer within `range`, `default` when absent or wrong.
    pub(super) fn int(
        &mut self,
        key: &str,
        setting: Option<&Setting<i64>>,
        default: i64,
        range: RangeInclusive<i64>,
    ) -> i64 {
        let Some(&n) = self.get(key, setting, "an integer") else {
            return default;
        };
        if !range.contains(&n) {
            self.error(
                key,
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

    /// A duration, more than zero and at most `max`; `default` when absent
    /// or wrong.
    pub(super) fn duration(
        &mut self,
        key: &str,
        setting: Option<&Setting<String>>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(text) = self.get(key, setting, &format!("a duration ({DURATION_FORM})")) else {
            return default;
        };
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.error(key, "must be more than zero");
                default
            }
            Ok(d) if d > max => {
                self.error(
                    key,
                    format!(
                        "{text:?} is longer than the {} allowed",
                        humantime::format_duration(max)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(_) => {
                self.error(key, format!("{text:?} is not a duration: {DURATION_FORM}"));
                default
            }
        }
    }

    pub(super) fn boolean(
        &mut self,
        key: &str,
        setting: Option<&Setting<bool>>,
        default: bool,
    ) -> bool {
        self.get(key, setting, "true or false")
            .copied()
            .unwrap_or(default)
    }
}

/// Checks the file's settings; `path` is the file, `base` its folder.
pub fn validate(raw: &RawConfig, lines: &Lines, path: &Path, base: &Path) -> Validated {
    let mut c = Checker::new(lines);
    let empty_host = RawHost::default();
    let (host, default_cache_dir) = host(&mut c, raw.host.as_ref().unwrap_or(&empty_host), base);
    let ingress = ingress(
        &mut c,
        raw.ingress.as_ref().unwrap_or(&RawIngress::default()),
    );
    let retention = retention(
        &mut c,
        raw.retention.as_ref().unwrap_or(&RawRetention::default()),
    );
    let admin = raw.admin.as_ref().map(|a| admin(&mut c, a, base));
    let mut pending = Vec::new();
    let redis = redis::redis(
        &mut c,
        raw.redis.as_ref().unwrap_or(&Default::default()),
        base,
        &mut pending,
    );

    let mut plugins = BTreeSet::new();
    let mut queues = BTreeMap::new();
    match &raw.queues {
        None => c.error("queues", "at least one queue must be declared"),
        Some(t) if t.is_empty() => c.error("queues", "at least one queue must be declared"),
        Some(t) => {
            for (name, q) in t {
                let key = join("queues", name);
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
                {
                    c.error(
                        &key,
                        "queue names use only letters, digits, '_', '-' and '.'",
                    );
                }
                let before = c.errors.len();
                let queue = queue::queue(
                    &mut c,
                    &Context {
                        name,
                        key: &key,
                        base,
                        ingress: &ingress,
                    },
                    q,
                    &mut pending,
                    &mut plugins,
                );
                if c.errors.len() == before
                    && let Some(queue) = queue
                {
                    queues.insert(name.clone(), queue);
                }
            }
        }
    }
    let routes = routes(&mut c, raw);

    let Checker {
        mut errors,
        warnings,
        files,
        ..
    } = c;
    errors.sort_by_key(|e| e.line.unwrap_or(0));
    Validated {
        config: Config {
            path: path.to_owned(),
            host,
            ingress,
            retention,
            admin,
            redis,
            routes,
            queues,
            warnings,
            lines: Lines::default(),
        },
        pending,
        files,
        default_cache_dir,
        errors,
        plugins,
    }
}

fn host(c: &mut Checker<'_>, h: &RawHost, base: &Path) -> (HostSettings, bool) {
    let prefix = c
        .get("host.prefix", h.prefix.as_ref(), "a string")
        .cloned()
        .unwrap_or_else(|| d::PREFIX.into());
    if prefix.is_empty() || prefix.contains(char::is_whitespace) {
        c.error("host.prefix", "must be non-empty and without spaces");
    } else if prefix.contains(['{', '}']) {
        c.error(
            "host.prefix",
            "must not contain '{' or '}': the host adds its own hash tags (Redis Cluster slots) to key names",
        );
    }
    let shutdown_timeout = c.duration(
        "host.shutdown_timeout",
        h.shutdown_timeout.as_ref(),
        d::SHUTDOWN_TIMEOUT,
        Duration::from_secs(3600),
    );
    let (cache_dir, default_cache_dir) = match c.get(
        "host.cache_dir",
        h.cache_dir.as_ref(),
        "a path (\"\" turns the cache off)",
    ) {
        Some(dir) if dir.is_empty() => (None, false),
        Some(dir) => (Some(base.join(dir)), false),
        None => (None, h.cache_dir.is_none()),
    };
    let plugin_compile_timeout = c.duration(
        "host.plugin_compile_timeout",
        h.plugin_compile_timeout.as_ref(),
        d::PLUGIN_COMPILE_TIMEOUT,
        Duration::from_secs(3600),
    );
    let plugin_compile_memory_mib = c.int(
        "host.plugin_compile_memory_mib",
        h.plugin_compile_memory_mib.as_ref(),
        d::PLUGIN_COMPILE_MEMORY_MIB,
        256..=65536,
    );
    let max_plugin_mib = c.int(
        "host.max_plugin_mib",
        h.max_plugin_mib.as_ref(),
        d::MAX_PLUGIN_MIB,
        1..=4096,
    );
    let on_missing_group = match c
        .get(
            "host.on_missing_group",
            h.on_missing_group.as_ref(),
            "\"recreate\" or \"stop\"",
        )
        .map(String::as_str)
    {
        None | Some("recreate") => MissingGroup::Recreate,
        Some("stop") => MissingGroup::Stop,
        Some(other) => {
            c.error(
                "host.on_missing_group",
                format!("must be \"recreate\" or \"stop\", found {other:?}"),
            );
            MissingGroup::Recreate
        }
    };
    (
        HostSettings {
            prefix,
            shutdown_timeout,
            cache_dir,
            plugin_compile_timeout,
            plugin_compile_memory_mib: plugin_compile_memory_mib as u32,
            max_plugin_bytes: max_plugin_mib as u64 * 1024 * 1024,
            on_missing_group,
        },
        default_cache_dir,
    )
}

fn ingress(c: &mut Checker<'_>, i: &RawIngress) -> IngressSettings {
    let stream = c
        .get("ingress.stream", i.stream.as_ref(), "a string")
        .cloned()
        .unwrap_or_else(|| d::INGRESS_STREAM.into());
    if stream.is_empty() {
        c.error("ingress.stream", "must not be empty");
    } else if stream.contains(['{', '}']) {
        c.error(
            "ingress.stream",
            "must not contain '{' or '}': the host adds its own hash tags (Redis Cluster slots) to key names",
        );
    }
    let batch = c.int(
        "ingress.batch",
        i.batch.as_ref(),
        d::INGRESS_BATCH,
        1..=10_000,
    );
    let visibility_timeout = c.duration(
        "ingress.visibility_timeout",
        i.visibility_timeout.as_ref(),
        d::INGRESS_VISIBILITY_TIMEOUT,
        MAX_DURATION,
    );
    let max_entry_kib = c.int(
        "ingress.max_entry_kib",
        i.max_entry_kib.as_ref(),
        d::MAX_ENTRY_KIB,
        1..=MAX_ENTRY_KIB as i64,
    );
    let partitions = c.int(
        "ingress.partitions",
        i.partitions.as_ref(),
        d::INGRESS_PARTITIONS,
        1..=crate::config::MAX_PARTITIONS as i64,
    );
    IngressSettings {
        stream,
        batch: batch as usize,
        visibility_timeout,
        max_entry_bytes: max_entry_kib as usize * 1024,
        partitions: partitions as usize,
    }
}

fn retention(c: &mut Checker<'_>, r: &RawRetention) -> RetentionSettings {
    // Retention may be long: ten years.
    let long = MAX_DURATION * 10;
    RetentionSettings {
        interval: c.duration(
            "retention.interval",
            r.interval.as_ref(),
            d::RETENTION_INTERVAL,
            Duration::from_secs(24 * 3600),
        ),
        keep_handled: c.duration(
            "retention.keep_handled",
            r.keep_handled.as_ref(),
            d::KEEP_HANDLED,
            long,
        ),
        dead_letter_age: c.duration(
            "retention.dead_letter_age",
            r.dead_letter_age.as_ref(),
            d::DEAD_LETTER_AGE,
            long,
        ),
        dead_letter_max_len: c.int(
            "retention.dead_letter_max_len",
            r.dead_letter_max_len.as_ref(),
            d::DEAD_LETTER_MAX_LEN,
            0..=i64::MAX,
        ) as u64,
        idle_consumer: c.duration(
            "retention.idle_consumer",
            r.idle_consumer.as_ref(),
            d::IDLE_CONSUMER,
            long,
        ),
    }
}

fn admin(c: &mut Checker<'_>, a: &RawAdmin, base: &Path) -> AdminSettings {
    let listen = match c.get(
        "admin.listen",
        a.listen.as_ref(),
        "an address, e.g. \"127.0.0.1:9464\"",
    ) {
        None => d::ADMIN_LISTEN,
        Some(text) => match text.parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                if !addr.ip().is_loopback() {
                    c.warn(
                        "admin.listen",
                        "is not a loopback address: /metrics, /healthz and /readyz are open to that network (the dashboard and its API need a token)",
                    );
                }
                addr
            }
            Err(_) => {
                c.error(
                    "admin.listen",
                    format!("{text:?} is not an address and port, e.g. \"127.0.0.1:9464\""),
                );
                d::ADMIN_LISTEN
            }
        },
    };
    let stats_interval = c.duration(
        "admin.stats_interval",
        a.stats_interval.as_ref(),
        d::STATS_INTERVAL,
        Duration::from_secs(600),
    );
    let cert = c.get(
        "admin.tls_cert",
        a.tls_cert.as_ref(),
        "a path to a PEM certificate chain",
    );
    let key = c.get(
        "admin.tls_key",
        a.tls_key.as_ref(),
        "a path to a PEM private key",
    );
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            c.error("admin.tls_key", "is needed with tls_cert");
            None
        }
        (None, Some(_)) => {
            c.error("admin.tls_cert", "is needed with tls_key");
            None
        }
        (Some(cert), Some(key)) => {
            let (cert, key) = (base.join(cert), base.join(key));
            c.file("admin.tls_cert", cert.clone(), FileKind::AdminCert);
            c.file("admin.tls_key", key.clone(), FileKind::AdminKey);
            Some(AdminTls {
                cert,
                key,
                cert_pem: Default::default(),
                key_pem: Default::default(),
            })
        }
    };
    let hosts = c
        .get(
            "admin.hosts",
            a.hosts.as_ref(),
            "an array of host names, e.g. [\"switchyard.internal\"]",
        )
        .cloned()
        .unwrap_or_default();
    for h in &hosts {
        if crate::grants::request_host(h).is_err() || h.contains(':') {
            c.error(
                "admin.hosts",
                format!("{h:?} is not a host name (write the name alone, without scheme or port)"),
            );
        }
    }
    AdminSettings {
        listen,
        stats_interval,
        tls,
        hosts: hosts
            .iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        token: None,
        read_token: None,
    }
}

fn routes(c: &mut Checker<'_>, raw: &RawConfig) -> BTreeMap<String, Vec<String>> {
    let mut routes = BTreeMap::new();
    let Some(table) = &raw.routes else {
        c.error("routes", "at least one route must be declared");
        return routes;
    };
    for (message_type, setting) in table {
        let key = join("routes", message_type);
        if message_type.trim().is_empty() {
            c.error(&key, "a message type must not be empty");
        }
        let Ok(targets) = &setting.value else {
            c.error(&key, "must be an array of queue names");
            continue;
        };
        if targets.is_empty() {
            c.error(&key, "routes to no queue");
        }
        let mut seen = BTreeSet::new();
        for target in targets {
            if !seen.insert(target.as_str()) {
                c.error(&key, format!("names queue {target:?} twice"));
            }
            let declared = raw.queues.as_ref().is_some_and(|q| q.contains_key(target));
            if !declared {
                c.error(&key, format!("routes to undeclared queue {target:?}"));
            }
        }
        if routes
            .insert(message_type.to_ascii_lowercase(), targets.clone())
            .is_some()
        {
            c.error(
                &key,
                "declared twice (message types match without regard to case)",
            );
        }
    }
    routes
}
