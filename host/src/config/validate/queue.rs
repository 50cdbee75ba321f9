//! Checking one `[queues.<name>]` table and its grants.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::super::defaults as d;
use super::super::parse::join;
use super::super::raw::RawQueue;
use super::super::{
    BUILTIN_PREFIX, HttpSettings, MAX_CONCURRENCY, MAX_DURATION, MAX_ENTRY_KIB, MAX_MEMORY_MIB,
    PluginRef, PublishGrant, QueueConfig,
};
use super::context::{Context, ca_file};
use super::{Checker, FileKind, Pending, Target};

pub(super) fn queue(
    c: &mut Checker<'_>,
    cx: &Context<'_>,
    q: &RawQueue,
    pending: &mut Vec<Pending>,
    plugins: &mut BTreeSet<PathBuf>,
) -> Option<QueueConfig> {
    let before = c.errors.len();
    let plugin = match c.get(
        &cx.key("plugin"),
        q.plugin.as_ref(),
        "a path to a .wasm file",
    ) {
        None if q.plugin.is_none() => {
            c.error(&cx.key("plugin"), "is required");
            None
        }
        None => None,
        Some(p) => match p.strip_prefix(BUILTIN_PREFIX) {
            Some(name) => Some(PluginRef::Builtin(name.to_owned())),
            None => {
                let resolved = cx.base.join(p);
                plugins.insert(resolved.clone());
                c.file(&cx.key("plugin"), resolved.clone(), FileKind::Plugin);
                Some(PluginRef::File(resolved))
            }
        },
    };
    let (concurrency_min, concurrency) = concurrency(c, cx, q.concurrency.as_ref());
    let handler_timeout = c.duration(
        &cx.key("handler_timeout"),
        q.handler_timeout.as_ref(),
        d::HANDLER_TIMEOUT,
        Duration::from_secs(24 * 3600),
    );
    let memory_mib = c.int(
        &cx.key("memory_mib"),
        q.memory_mib.as_ref(),
        d::MEMORY_MIB,
        1..=i64::from(MAX_MEMORY_MIB),
    );
    let ingress_kib = (cx.ingress.max_entry_bytes / 1024) as i64;
    let max_entry_kib = c.int(
        &cx.key("max_entry_kib"),
        q.max_entry_kib.as_ref(),
        ingress_kib,
        1..=MAX_ENTRY_KIB as i64,
    );
    if max_entry_kib > ingress_kib {
        c.warn(
            &cx.key("max_entry_kib"),
            format!(
                "{max_entry_kib} is more than ingress.max_entry_kib ({ingress_kib}), which the router applies first"
            ),
        );
    }
    let visibility_timeout = c.duration(
        &cx.key("visibility_timeout"),
        q.visibility_timeout.as_ref(),
        d::VISIBILITY_TIMEOUT,
        MAX_DURATION,
    );
    if visibility_timeout < Duration::from_secs(1) {
        // Leases are renewed at a third of it: shorter would spend the
        // host on renewals.
        c.error(&cx.key("visibility_timeout"), "must be at least 1s");
    }
    let max_attempts = c.int(
        &cx.key("max_attempts"),
        q.max_attempts.as_ref(),
        d::MAX_ATTEMPTS,
        1..=10_000,
    );
    let max_trap_attempts = c.int(
        &cx.key("max_trap_attempts"),
        q.max_trap_attempts.as_ref(),
        d::MAX_TRAP_ATTEMPTS,
        1..=10_000,
    );
    let retry_quick = c.int(
        &cx.key("retry_quick"),
        q.retry_quick.as_ref(),
        d::RETRY_QUICK,
        0..=100,
    );
    let retry_quick_delay = c.duration(
        &cx.key("retry_quick_delay"),
        q.retry_quick_delay.as_ref(),
        d::RETRY_QUICK_DELAY,
        MAX_DURATION,
    );
    let retry_delay = c.duration(
        &cx.key("retry_delay"),
        q.retry_delay.as_ref(),
        d::RETRY_DELAY,
        MAX_DURATION,
    );
    // By default the backoff grows as far as a retry can wait (see below).
    let retry_delay_max = c.duration(
        &cx.key("retry_delay_max"),
        q.retry_delay_max.as_ref(),
        visibility_timeout.max(retry_delay),
        MAX_DURATION,
    );
    if retry_delay_max < retry_delay {
        c.error(
            &cx.key("retry_delay_max"),
            "must not be shorter than retry_delay",
        );
    }
    // A retry is scheduled by setting the message's idle clock so that it
    // becomes claimable after the delay: no delay can be longer than the
    // visibility timeout.
    for (key, delay) in [
        ("retry_delay_max", retry_delay_max),
        ("retry_delay", retry_delay),
        ("retry_quick_delay", retry_quick_delay),
    ] {
        if delay > visibility_timeout && c.errors.len() == before {
            c.warn(
                &cx.key(key),
                format!(
                    "{} is longer than visibility_timeout ({}); retries wait at most visibility_timeout",
                    humantime::format_duration(delay),
                    humantime::format_duration(visibility_timeout)
                ),
            );
            break;
        }
    }
    let reuse_instances = c.boolean(
        &cx.key("reuse_instances"),
        q.reuse_instances.as_ref(),
        false,
    );
    let plugin_config = match &q.config {
        Some(t) => plugin_config(c, cx, t, pending),
        None => Default::default(),
    };
    let http = http(c, cx, q, handler_timeout);
    let keyvalue = q
        .keyvalue
        .as_ref()
        .map(|k| super::grants::keyvalue(c, cx, k));
    let types = c
        .get(
            &cx.key("publish"),
            q.publish.as_ref(),
            "an array of message types (\"*\" for any)",
        )
        .cloned()
        .unwrap_or_default();
    let publish = PublishGrant {
        types: types
            .iter()
            .map(|t| t.trim().to_ascii_lowercase())
            .collect(),
        max_per_call: c.int(
            &cx.key("max_publish_per_call"),
            q.max_publish_per_call.as_ref(),
            d::MAX_PUBLISH_PER_CALL,
            1..=1000,
        ) as u32,
    };
    if publish.types.iter().any(String::is_empty) {
        c.error(&cx.key("publish"), "a message type must not be empty");
    }
    let max_hops = c.int(
        &cx.key("max_hops"),
        q.max_hops.as_ref(),
        d::MAX_HOPS,
        1..=1000,
    ) as u32;
    let sql = q
        .sql
        .as_ref()
        .and_then(|s| super::grants::sql(c, cx, s, handler_timeout, pending));
    let mail = q
        .mail
        .as_ref()
        .and_then(|m| super::grants::mail(c, cx, m, handler_timeout, pending));
    if c.errors.len() > before {
        return None;
    }
    Some(QueueConfig {
        name: cx.name.to_owned(),
        plugin: plugin?,
        concurrency,
        concurrency_min,
        handler_timeout,
        memory_mib: memory_mib as u32,
        max_entry_bytes: max_entry_kib as usize * 1024,
        visibility_timeout,
        max_attempts: max_attempts as u32,
        max_trap_attempts: max_trap_attempts as u32,
        retry_quick: retry_quick as u32,
        retry_quick_delay,
        retry_delay,
        retry_delay_max,
        reuse_instances,
        plugin_config,
        secrets: Vec::new(),
        http,
        keyvalue,
        publish,
        max_hops,
        sql,
        mail,
    })
}

/// `concurrency`: a number (fixed), or `{ min = 2, max = 64 }` (scaled
/// between them with the backlog). Returns (min, max).
fn concurrency(
    c: &mut Checker<'_>,
    cx: &Context<'_>,
    setting: Option<&toml::Spanned<toml::Value>>,
) -> (u32, u32) {
    let default = (d::CONCURRENCY as u32, d::CONCURRENCY as u32);
    let range = 1..=i64::from(MAX_CONCURRENCY);
    let key = cx.key("concurrency");
    let out_of_range = |c: &mut Checker<'_>, key: &str, n: i64| {
        c.error(
            key,
            format!("must be between 1 and {MAX_CONCURRENCY}, found {n}"),
        );
    };
    let table = match setting.map(toml::Spanned::get_ref) {
        None => return default,
        Some(toml::Value::Integer(n)) if range.contains(n) => return (*n as u32, *n as u32),
        Some(toml::Value::Integer(n)) => {
            out_of_range(c, &key, *n);
            return default;
        }
        Some(toml::Value::Table(t)) => t,
        Some(other) => {
            c.error(
                &key,
                format!(
                    "must be an integer, or {{ min = 2, max = 64 }} to scale between them, found {}",
                    other.type_str()
                ),
            );
            return default;
        }
    };
    let int = |c: &mut Checker<'_>, part: &str| -> Option<i64> {
        match table.get(part)? {
            toml::Value::Integer(n) => Some(*n),
            other => {
                c.error(
                    &join(&key, part),
                    format!("must be an integer, found {}", other.type_str()),
                );
                None
            }
        }
    };
    let min = int(c, "min");
    let max = int(c, "max");
    for name in table.keys() {
        if name != "min" && name != "max" {
            c.error(&join(&key, name), "unknown key (expected one of: min, max)");
        }
    }
    let min = min.unwrap_or(d::CONCURRENCY_MIN);
    if !range.contains(&min) {
        out_of_range(c, &join(&key, "min"), min);
    }
    let Some(max) = max else {
        if !table.contains_key("max") {
            c.error(
                &join(&key, "max"),
                "is required: concurrency = { min = 2, max = 64 } scales between them, a number is fixed",
            );
        }
        return default;
    };
    if !range.contains(&max) {
        out_of_range(c, &join(&key, "max"), max);
        return default;
    }
    if min > max {
        c.error(
            &join(&key, "min"),
            format!("must not be more than concurrency.max ({max}), found {min}"),
        );
        return (max as u32, max as u32);
    }
    (min.clamp(1, max) as u32, max as u32)
}

/// The `[queues.X.config]` table as JSON; a value written
/// `{ env = "NAME" }` is read from the environment by resolve.
fn plugin_config(
    c: &mut Checker<'_>,
    cx: &Context<'_>,
    table: &std::collections::BTreeMap<String, toml::Spanned<toml::Value>>,
    pending: &mut Vec<Pending>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (name, value) in table {
        let key = join(&cx.key("config"), name);
        let env = match value.get_ref() {
            toml::Value::Table(t) if t.contains_key("env") => t,
            other => {
                let json = serde_json::to_value(other).unwrap_or(serde_json::Value::Null);
                map.insert(name.clone(), json);
                continue;
            }
        };
        match (env.get("env"), env.len()) {
            (Some(toml::Value::String(var)), 1) if !var.is_empty() => {
                map.insert(name.clone(), serde_json::Value::String(String::new()));
                pending.push(Pending {
                    key,
                    var: var.clone(),
                    target: Target::PluginConfig {
                        queue: cx.name.to_owned(),
                        name: name.clone(),
                    },
                });
            }
            _ => c.error(
                &key,
                "a secret is written { env = \"NAME\" }, NAME an environment variable",
            ),
        }
    }
    map
}

/// The queue's outbound HTTP settings.
fn http(
    c: &mut Checker<'_>,
    cx: &Context<'_>,
    q: &RawQueue,
    handler_timeout: Duration,
) -> HttpSettings {
    let key = |k| cx.key(k);
    let mut allowed = Vec::new();
    for entry in c
        .get(
            &key("allowed_hosts"),
            q.allowed_hosts.as_ref(),
            "an array of \"scheme://host[:port]\"",
        )
        .cloned()
        .unwrap_or_default()
    {
        match crate::grants::AllowedHost::parse(&entry) {
            Ok(a) => allowed.push(a),
            Err(e) => c.error(&key("allowed_hosts"), e.to_string()),
        }
    }
    let timeout = c.duration(
        &key("http_timeout"),
        q.http_timeout.as_ref(),
        d::HTTP_TIMEOUT.min(handler_timeout),
        MAX_DURATION,
    );
    if timeout > handler_timeout {
        c.warn(
            &key("http_timeout"),
            "is longer than handler_timeout; a request never runs past the handler's deadline",
        );
    }
    HttpSettings {
        grant: crate::grants::HttpGrant { allowed },
        timeout,
        max_response_bytes: c.int(
            &key("max_response_kib"),
            q.max_response_kib.as_ref(),
            d::MAX_RESPONSE_KIB,
            1..=1024 * 1024,
        ) as usize
            * 1024,
        max_requests: c.int(
            &key("max_requests_per_call"),
            q.max_requests_per_call.as_ref(),
            d::MAX_REQUESTS_PER_CALL,
            1..=10_000,
        ) as u32,
        max_connections_per_host: c.int(
            &key("max_connections_per_host"),
            q.max_connections_per_host.as_ref(),
            d::MAX_CONNECTIONS_PER_HOST,
            1..=1024,
        ) as u32,
        keep_alive: c.boolean(&key("http_keep_alive"), q.http_keep_alive.as_ref(), true),
        ca_file: ca_file(c, &key("http_ca_file"), q.http_ca_file.as_ref(), cx.base),
    }
}
