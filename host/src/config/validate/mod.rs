//! Checking queues.toml's settings and turning them into the model: pure,
//! every error at once, each with its key and line; settings valid alone
//! but working against each other are warnings. What needs I/O (secrets,
//! files) is left for [`super::resolve`], listed in [`Validated`].

mod context;
mod grants;
mod queue;
mod redis;
mod tables;

use tables::{admin, host, ingress, retention};

use context::Context;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::parse::{Lines, join};
use super::raw::{RawConfig, RawHost, RawIngress, RawRetention, RawRoute, Setting};
use super::{Config, ConfigError};

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
    let (routes, validated) = routes(&mut c, raw);

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
            validated,
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

/// The routes, and the message types whose bodies are checked against the
/// schema.
fn routes(
    c: &mut Checker<'_>,
    raw: &RawConfig,
) -> (BTreeMap<String, Vec<String>>, BTreeSet<String>) {
    let mut routes = BTreeMap::new();
    let mut validated = BTreeSet::new();
    let Some(table) = &raw.routes else {
        c.error("routes", "at least one route must be declared");
        return (routes, validated);
    };
    for (message_type, setting) in table {
        let key = join("routes", message_type);
        if message_type.trim().is_empty() {
            c.error(&key, "a message type must not be empty");
        }
        let Some((targets, validate)) = route(c, &key, setting) else {
            continue;
        };
        if validate {
            if crate::schema::for_type(message_type).is_some() {
                validated.insert(message_type.to_ascii_lowercase());
            } else {
                c.error(
                    &key,
                    format!(
                        "validate = true, but the chat events schema has no message type {message_type:?} (it has {})",
                        crate::schema::message_types().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        let targets = &targets;
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
    (routes, validated)
}

/// A route's queues and whether it validates, from either form; `None`
/// (with the errors reported) when it has neither.
fn route(
    c: &mut Checker<'_>,
    key: &str,
    setting: &Setting<RawRoute>,
) -> Option<(Vec<String>, bool)> {
    const SHAPE: &str =
        r#"must be an array of queue names, or a table { queues = [...], validate = true }"#;
    let table = match &setting.value {
        Ok(RawRoute::Queues(queues)) => return Some((queues.clone(), false)),
        Ok(RawRoute::Table(table)) => table,
        // An array that is not all strings.
        Err("array") => {
            c.error(key, "must be an array of queue names (strings)");
            return None;
        }
        Err(found) => {
            c.error(key, format!("{SHAPE}, found {found}"));
            return None;
        }
    };
    let mut ok = true;
    for unknown in table
        .keys()
        .filter(|k| !matches!(k.as_str(), "queues" | "validate"))
    {
        c.error(
            &join(key, unknown),
            "unknown key (a route's table has `queues` and `validate`)",
        );
        ok = false;
    }
    let queues = match table.get("queues") {
        Some(toml::Value::Array(items)) => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect();
            if names.is_none() {
                c.error(&join(key, "queues"), "must be an array of queue names");
            }
            names
        }
        Some(other) => {
            c.error(
                &join(key, "queues"),
                format!(
                    "must be an array of queue names, found {}",
                    other.type_str()
                ),
            );
            None
        }
        None => {
            c.error(
                key,
                "a route's table needs `queues`, the queues it fans out to",
            );
            None
        }
    };
    let validate = match table.get("validate") {
        None => Some(false),
        Some(toml::Value::Boolean(b)) => Some(*b),
        Some(other) => {
            c.error(
                &join(key, "validate"),
                format!("must be true or false, found {}", other.type_str()),
            );
            None
        }
    };
    match (queues, validate) {
        (Some(queues), Some(validate)) if ok => Some((queues, validate)),
        _ => None,
    }
}
