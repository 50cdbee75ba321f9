//! Every effective setting of a configuration, defaults included, as
//! records (what operators are shown, what a reload compares), and what an
//! edit changes, setting by setting.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::Config;

/// A setting as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub text: String,
    /// It may hold credentials: a change report says that it changed,
    /// never what from or to.
    pub sensitive: bool,
}

#[derive(Default)]
struct Settings(BTreeMap<String, Shown>);

impl Settings {
    fn plain(&mut self, key: impl Into<String>, text: impl Into<String>) {
        self.0.insert(
            key.into(),
            Shown {
                text: text.into(),
                sensitive: false,
            },
        );
    }

    fn sensitive(&mut self, key: impl Into<String>, text: impl Into<String>) {
        self.0.insert(
            key.into(),
            Shown {
                text: text.into(),
                sensitive: true,
            },
        );
    }
}

/// Stands for a value that must not be shown: equal values give equal
/// text, so a change shows as one.
fn fingerprint(value: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value.as_bytes());
    format!("(secret {:02x}{:02x})", digest[0], digest[1])
}

impl Config {
    pub fn settings(&self) -> BTreeMap<String, Shown> {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        let mut s = Settings::default();
        let h = &self.host;
        s.plain("host.prefix", h.prefix.clone());
        s.plain("host.shutdown_timeout", d(&h.shutdown_timeout));
        s.plain(
            "host.cache_dir",
            h.cache_dir
                .as_ref()
                .map_or_else(|| "(off)".into(), |p| p.display().to_string()),
        );
        s.plain("host.plugin_compile_timeout", d(&h.plugin_compile_timeout));
        s.plain(
            "host.plugin_compile_memory_mib",
            h.plugin_compile_memory_mib.to_string(),
        );
        s.plain(
            "host.max_plugin_mib",
            (h.max_plugin_bytes / (1024 * 1024)).to_string(),
        );
        s.plain("host.on_missing_group", h.on_missing_group.as_str());
        if let Some(a) = &self.admin {
            s.plain("admin.listen", a.listen.to_string());
            s.plain("admin.stats_interval", d(&a.stats_interval));
            s.plain("admin.hosts", a.hosts.join(", "));
            if let Some(tls) = &a.tls {
                s.plain("admin.tls_cert", tls.cert.display().to_string());
                s.plain("admin.tls_key", tls.key.display().to_string());
            }
        }
        let i = &self.ingress;
        s.plain("ingress.stream", i.stream.clone());
        s.plain("ingress.batch", i.batch.to_string());
        s.plain("ingress.visibility_timeout", d(&i.visibility_timeout));
        s.plain(
            "ingress.max_entry_kib",
            (i.max_entry_bytes / 1024).to_string(),
        );
        s.plain("ingress.partitions", i.partitions.to_string());
        let rs = &self.redis;
        let credential = |v: &Option<String>| v.as_deref().map_or("(none)".into(), fingerprint);
        s.sensitive("redis.username", credential(&rs.username));
        s.sensitive("redis.password", credential(&rs.password));
        s.sensitive("redis.sentinel_username", credential(&rs.sentinel_username));
        s.sensitive("redis.sentinel_password", credential(&rs.sentinel_password));
        s.plain(
            "redis.ca_file",
            rs.ca_file
                .as_ref()
                .map_or("(none)".into(), |c| c.path.display().to_string()),
        );
        s.plain("redis.wait_replicas", rs.wait_replicas.to_string());
        s.plain("redis.wait_timeout", d(&rs.wait_timeout));
        let r = &self.retention;
        s.plain("retention.interval", d(&r.interval));
        s.plain("retention.keep_handled", d(&r.keep_handled));
        s.plain("retention.dead_letter_age", d(&r.dead_letter_age));
        s.plain(
            "retention.dead_letter_max_len",
            r.dead_letter_max_len.to_string(),
        );
        s.plain("retention.idle_consumer", d(&r.idle_consumer));
        for (message_type, queues) in &self.routes {
            let validated = if self.validated.contains(message_type) {
                " (bodies validated against the schema)"
            } else {
                ""
            };
            s.plain(
                format!("routes.\"{message_type}\""),
                format!("{}{validated}", queues.join(", ")),
            );
        }
        for q in self.queues.values() {
            let k = |key: &str| format!("queues.{}.{key}", q.name);
            s.plain(k("plugin"), q.plugin.to_string());
            s.plain(
                k("concurrency"),
                if q.concurrency_min == q.concurrency {
                    q.concurrency.to_string()
                } else {
                    format!("{{ min = {}, max = {} }}", q.concurrency_min, q.concurrency)
                },
            );
            s.plain(k("handler_timeout"), d(&q.handler_timeout));
            s.plain(k("memory_mib"), q.memory_mib.to_string());
            s.plain(k("max_entry_kib"), (q.max_entry_bytes / 1024).to_string());
            s.plain(k("visibility_timeout"), d(&q.visibility_timeout));
            s.plain(k("max_attempts"), q.max_attempts.to_string());
            s.plain(k("max_trap_attempts"), q.max_trap_attempts.to_string());
            s.plain(k("retry_quick"), q.retry_quick.to_string());
            s.plain(k("retry_quick_delay"), d(&q.retry_quick_delay));
            s.plain(k("retry_delay"), d(&q.retry_delay));
            s.plain(k("retry_delay_max"), d(&q.retry_delay_max));
            s.plain(k("reuse_instances"), q.reuse_instances.to_string());
            // A plugin's own settings may hold credentials written in the
            // file: a change to one is reported, never its value.
            for (key, value) in &q.plugin_config {
                let shown = match q.secrets.iter().find(|s| s.key == *key) {
                    Some(secret) => format!("(secret from ${})", secret.env),
                    None => value.to_string(),
                };
                s.sensitive(k(&format!("config.{key}")), shown);
            }
            let hosts: Vec<String> = q
                .http
                .grant
                .allowed
                .iter()
                .map(ToString::to_string)
                .collect();
            s.plain(k("allowed_hosts"), hosts.join(", "));
            s.plain(k("http_timeout"), d(&q.http.timeout));
            s.plain(
                k("max_response_kib"),
                (q.http.max_response_bytes / 1024).to_string(),
            );
            s.plain(k("max_requests_per_call"), q.http.max_requests.to_string());
            s.plain(
                k("max_connections_per_host"),
                q.http.max_connections_per_host.to_string(),
            );
            s.plain(k("http_keep_alive"), q.http.keep_alive.to_string());
            s.plain(
                k("http_ca_file"),
                q.http
                    .ca_file
                    .as_ref()
                    .map_or("(none)".into(), |c| c.path.display().to_string()),
            );
            if let Some(kv) = &q.keyvalue {
                s.plain(k("keyvalue.max_keys"), kv.max_keys.to_string());
                s.plain(k("keyvalue.max_kib"), (kv.max_bytes / 1024).to_string());
                s.plain(
                    k("keyvalue.ttl"),
                    kv.ttl.as_ref().map_or("(none)".into(), d),
                );
            }
            s.plain(k("publish"), q.publish.types.join(", "));
            s.plain(
                k("max_publish_per_call"),
                q.publish.max_per_call.to_string(),
            );
            s.plain(k("max_hops"), q.max_hops.to_string());
            if let Some(sql) = &q.sql {
                s.sensitive(k("sql.database_url"), fingerprint(&sql.database_url));
                s.plain(k("sql.pool"), sql.pool.to_string());
                s.plain(
                    k("sql.ca_file"),
                    sql.ca_file
                        .as_ref()
                        .map_or("(none)".into(), |c| c.path.display().to_string()),
                );
                s.plain(k("sql.timeout"), d(&sql.timeout));
                s.plain(k("sql.max_rows"), sql.max_rows.to_string());
                s.plain(
                    k("sql.max_result_kib"),
                    (sql.max_result_bytes / 1024).to_string(),
                );
                s.plain(
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
                s.sensitive(k("mail.smtp_url"), fingerprint(&credentials));
                s.plain(k("mail.pool"), mail.pool.to_string());
                s.plain(
                    k("mail.ca_file"),
                    mail.ca_file
                        .as_ref()
                        .map_or("(none)".into(), |c| c.path.display().to_string()),
                );
                s.plain(k("mail.timeout"), d(&mail.timeout));
                s.plain(k("mail.from"), mail.from.join(", "));
                s.plain(k("mail.max_per_call"), mail.max_per_call.to_string());
                s.plain(k("mail.max_recipients"), mail.max_recipients.to_string());
                s.plain(k("mail.max_kib"), (mail.max_bytes / 1024).to_string());
            }
        }
        s.0
    }
}

/// Settings fixed for the life of a process: every Redis key name derives
/// from them, or the compiled-plugin cache is opened with them, or the
/// connection to Redis is made with them, or the admin server listens with
/// them.
pub const RESTART_ONLY: &[&str] = &[
    "host.prefix",
    "host.cache_dir",
    "ingress.stream",
    "redis.username",
    "redis.password",
    "redis.sentinel_username",
    "redis.sentinel_password",
    "redis.ca_file",
    "admin.listen",
    "admin.tls_cert",
    "admin.tls_key",
];

/// One setting an edit changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// `None`: the setting is new (or gone, for `to`).
    pub from: Option<String>,
    pub to: Option<String>,
    /// Said to have changed, never what from or to.
    pub sensitive: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sensitive {
            let what = match (&self.from, &self.to) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "changed",
            };
            return write!(f, "{}: {what}", self.key);
        }
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        write!(
            f,
            "{}: {} -> {}",
            self.key,
            show(&self.from),
            show(&self.to)
        )
    }
}

/// What a reload of queues.toml changes, setting by setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// Settings applied while running.
    pub applied: Vec<Change>,
    /// Settings that only a restart applies.
    pub at_restart: Vec<Change>,
}

impl ConfigChanges {
    /// The differences between two configurations.
    pub fn between(old: &Config, new: &Config) -> Self {
        let (a, b) = (old.settings(), new.settings());
        let mut changes = ConfigChanges::default();
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            let (from, to) = (a.get(key), b.get(key));
            if from.map(|s| &s.text) == to.map(|s| &s.text) {
                continue;
            }
            let change = Change {
                key: key.clone(),
                sensitive: from.or(to).is_some_and(|s| s.sensitive),
                from: from.map(|s| s.text.clone()),
                to: to.map(|s| s.text.clone()),
            };
            if RESTART_ONLY.contains(&key.as_str()) {
                changes.at_restart.push(change);
            } else {
                changes.applied.push(change);
            }
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.at_restart.is_empty()
    }

    /// Every change: those applied, then those waiting for a restart.
    pub fn all(&self) -> impl Iterator<Item = &Change> {
        self.applied.iter().chain(&self.at_restart)
    }
}
