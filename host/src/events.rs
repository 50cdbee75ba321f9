//! What the host reports as it works: one named event per happening, each
//! writing its log line (with `event = "<name>"`) and counting its metrics
//! together, so that the log and the metrics never disagree, and a test or
//! an operator looks an event up by its name, not by its wording. Label
//! values come from the tables in [`crate::kinds`] and
//! [`crate::reason::DeadClass`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::kinds::{Capability, FailureKind};
use crate::metrics::{Metrics, QueueMetrics};
use crate::reason::DeadReason;

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// How an attempt ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Success,
    Retry,
    Reject,
    Failed(FailureKind),
}

impl Ended {
    pub fn label(self) -> &'static str {
        match self {
            Ended::Success => "success",
            Ended::Retry => "retry",
            Ended::Reject => "reject",
            Ended::Failed(kind) => kind.label(),
        }
    }
}

/// The delivery an event is about.
#[derive(Debug, Clone, Copy)]
pub struct Handling<'a> {
    pub queue: &'a str,
    pub msg_id: &'a str,
    pub msg_type: &'a str,
    pub attempt: u32,
    /// The content hash of the plugin version that ran (or would have).
    pub plugin: &'a str,
}

/// An attempt ended: counted by how (`switchyard_queue_succeeded_total`,
/// `_retried_total`, `_rejected_total`, `_failed_total{kind}`). Its log
/// line is the settlement's.
pub fn attempt_ended(m: &QueueMetrics, ended: Ended) {
    match ended {
        Ended::Success => add(&m.succeeded, 1),
        Ended::Retry => add(&m.retried, 1),
        Ended::Reject => add(&m.rejected, 1),
        Ended::Failed(kind) => {
            add(&m.failed, 1);
            add(&m.failed_by_kind[kind.index()], 1);
        }
    }
}

/// `handled`: a message was handled and is being acked.
pub fn handled(m: &QueueMetrics, h: &Handling<'_>) {
    m.settled_by(h.plugin);
    tracing::info!(event = "handled", queue = %h.queue, msg_id = %h.msg_id, msg_type = %h.msg_type, attempt = h.attempt, plugin = %h.plugin, outcome = "success", "Message handled.");
}

/// `retry_scheduled`: an attempt failed and the message runs again after
/// `delay` (cut to the visibility timeout from `cut_from`, if given).
pub fn retry_scheduled(
    h: &Handling<'_>,
    ended: Ended,
    reason: &str,
    delay: Duration,
    cut_from: Option<Duration>,
) {
    tracing::warn!(event = "retry_scheduled", queue = %h.queue, msg_id = %h.msg_id, msg_type = %h.msg_type, attempt = h.attempt, plugin = %h.plugin, outcome = ended.label(), reason = %reason, retry_in_ms = delay.as_millis() as u64, "Attempt failed; will retry.");
    if let Some(wanted) = cut_from {
        tracing::warn!(event = "retry_delay_cut", queue = %h.queue, msg_id = %h.msg_id, wanted_ms = wanted.as_millis() as u64, "A retry delay longer than the queue's visibility_timeout was cut to it.");
    }
}

/// `dead_lettered`: a queue moved a message to the dead-letter stream;
/// `ended` is how its last attempt ended, `None` if the plugin never ran
/// on it this time (it is not a message for the queue, or it was delivered
/// too often). Counted in total and by class.
pub fn dead_lettered(
    m: &QueueMetrics,
    h: &Handling<'_>,
    ended: Option<Ended>,
    reason: &DeadReason,
) {
    add(&m.dead_lettered, 1);
    add(&m.dead_lettered_by[reason.class().index()], 1);
    let abandoned = matches!(reason, DeadReason::Abandoned { .. });
    if ended.is_some() || abandoned {
        m.settled_by(h.plugin);
    }
    let outcome = match ended {
        Some(e) => e.label(),
        None if abandoned => "exhausted",
        None => "unusable",
    };
    tracing::warn!(event = "dead_lettered", queue = %h.queue, msg_id = %h.msg_id, msg_type = %h.msg_type, attempt = h.attempt, plugin = %h.plugin, outcome, class = reason.class().label(), reason = %reason, "Message dead-lettered.");
}

/// `reclaimed`: a queue took over messages whose consumer went quiet, or
/// whose retry delay is over.
pub fn reclaimed(m: &QueueMetrics, queue: &str, count: usize) {
    add(&m.reclaimed, count as u64);
    tracing::debug!(event = "reclaimed", queue = %queue, count, "Took over pending messages (abandoned, or due for a retry).");
}

/// What a scaling tick changed.
#[derive(Debug, Clone, Copy)]
pub struct Scaling<'a> {
    pub queue: &'a str,
    pub from: usize,
    pub to: usize,
    pub min: usize,
    pub max: usize,
    pub busy: usize,
    pub backlog: bool,
}

/// `scaled`: a queue's concurrency changed.
pub fn scaled(m: &QueueMetrics, s: &Scaling<'_>) {
    let (direction, counter) = if s.to > s.from {
        ("up", &m.scaled_up)
    } else {
        ("down", &m.scaled_down)
    };
    add(counter, 1);
    tracing::info!(event = "scaled", queue = %s.queue, from = s.from, to = s.to, min = s.min, max = s.max, busy = s.busy, backlog = s.backlog, direction, "Concurrency changed.");
}

/// `denied`: the host refused a plugin's capability call (no grant, or for
/// HTTP a destination or a limit not granted). `detail` is already masked.
pub fn denied(m: &QueueMetrics, queue: &str, capability: Capability, detail: &str) {
    let counter = match capability {
        Capability::Http => &m.http_denied,
        Capability::KeyValue => &m.kv_denied,
        Capability::Sql => &m.sql_denied,
        Capability::Mail => &m.mail_denied,
        // A message type not granted fails the call that publishes it.
        Capability::Publish => &m.publish_denied,
    };
    add(counter, 1);
    tracing::warn!(event = "denied", queue = %queue, capability = capability.label(), detail = %detail, "A plugin's call was denied.");
}

/// `group_missing`: a queue's consumer group is gone. `recreate`: what
/// `host.on_missing_group` says to do.
pub fn queue_group_missing(m: &QueueMetrics, queue: &str, stream: &str, recreate: bool) {
    add(&m.group_missing, 1);
    if recreate {
        tracing::error!(event = "group_missing", queue = %queue, stream = %stream, "The queue's consumer group is gone (did Redis lose its data?); recreating it at the start of the stream (host.on_missing_group = \"recreate\").");
    } else {
        tracing::error!(event = "group_missing", queue = %queue, stream = %stream, "The queue's consumer group is gone (did Redis lose its data?); not reading until an operator recreates it (host.on_missing_group = \"stop\").");
    }
}

/// `routed`: the router fanned `count` entries out, in one step.
pub fn routed(m: &Metrics, count: u64) {
    add(&m.router.routed, count);
}

/// `ingress_dead_lettered`: the router dead-lettered an ingress entry, for
/// every queue (`queue` is `None`) or for one queue it could not go to.
pub fn ingress_dead_lettered(
    m: &Metrics,
    stream: &str,
    entry_id: &str,
    queue: Option<&str>,
    reason: &DeadReason,
) {
    add(&m.router.dead_lettered, 1);
    add(&m.router.dead_lettered_by[reason.class().index()], 1);
    let class = reason.class().label();
    match queue {
        None => {
            tracing::warn!(event = "ingress_dead_lettered", entry_id = %entry_id, stream = %stream, class, reason = %reason, "Ingress entry dead-lettered.")
        }
        Some(queue) => {
            tracing::warn!(event = "ingress_dead_lettered", queue = %queue, entry_id = %entry_id, stream = %stream, class, reason = %reason, "Message dead-lettered for a queue.")
        }
    }
}

/// `ingress_reclaimed`: the router took over entries a stopped router left
/// unrouted.
pub fn ingress_reclaimed(m: &Metrics, stream: &str, count: usize) {
    add(&m.router.reclaimed, count as u64);
    tracing::warn!(event = "ingress_reclaimed", stream = %stream, count, "Took over ingress entries a stopped router left unrouted.");
}

/// `plugin_loaded`: a plugin was compiled, or taken from the compiled-code
/// cache (the "Plugin loaded." line itself is the loader's).
pub fn plugin_loaded(m: &Metrics, from_cache: bool) {
    add(
        if from_cache {
            &m.reloads.cache_hits
        } else {
            &m.reloads.compiles
        },
        1,
    );
}

/// How a plugin version's code was had.
#[derive(Debug, Clone, Copy)]
pub struct CodeOrigin<'a> {
    /// The time compiling (or reading from the cache) took.
    pub compile: Duration,
    /// Whether the code came from the cache (no compile).
    pub from_cache: bool,
    /// `cranelift` or `winch`.
    pub compiler: &'a str,
}

/// `plugin_swapped`: a new version of a plugin file serves its queues.
pub fn plugin_swapped(
    m: &Metrics,
    path: &str,
    old: &str,
    new: &str,
    queues: &str,
    code: CodeOrigin<'_>,
) {
    add(&m.reloads.plugin_swaps, 1);
    tracing::info!(event = "plugin_swapped", path = %path, old = %old, new = %new, queues = %queues, compile_ms = code.compile.as_millis() as u64, from_cache = code.from_cache, compiler = %code.compiler, "Plugin swapped; the next messages run on the new version.");
}

/// `plugin_optimized`: a plugin version that started on Winch's code runs
/// on Cranelift's from the next message (`compile`: Cranelift's compile).
pub fn plugin_optimized(m: &Metrics, path: &str, plugin: &str, queues: &str, compile: Duration) {
    add(&m.reloads.plugin_optimized, 1);
    add(&m.reloads.compiles, 1);
    tracing::info!(event = "plugin_optimized", path = %path, plugin = %plugin, queues = %queues, compile_ms = compile.as_millis() as u64, "Plugin optimized; the next messages run on Cranelift's code.");
}

/// `plugin_not_optimized`: Cranelift could not compile a plugin version
/// that runs on Winch's code; it keeps running on Winch's.
pub fn plugin_not_optimized(m: &Metrics, path: &str, plugin: &str, reason: &str) {
    add(&m.reloads.plugin_not_optimized, 1);
    tracing::warn!(event = "plugin_not_optimized", path = %path, plugin = %plugin, reason = %reason, "Cranelift could not compile the plugin; it keeps running on Winch's code, more slowly.");
}

/// `plugin_refused`: a changed plugin file was refused; the running
/// version keeps serving `queues`.
pub fn plugin_refused(m: &Metrics, path: &str, kept: &str, queues: &[String], reason: &str) {
    add(&m.reloads.plugin_refused, 1);
    for q in queues {
        m.queue(q).refused(reason);
    }
    tracing::warn!(event = "plugin_refused", path = %path, reason = %reason, kept = %kept, "Plugin file refused; the running version keeps serving.");
}

/// `config_applied`: an edit of queues.toml was applied.
pub fn config_applied(
    m: &Metrics,
    path: &str,
    queues: usize,
    applied: usize,
    at_restart: usize,
    changed: &str,
) {
    add(&m.reloads.config_applied, 1);
    tracing::info!(event = "config_applied", path = %path, queues, applied, at_restart, changed = %changed, "queues.toml applied.");
}

/// `config_refused`: an edit of queues.toml was refused (its errors are
/// logged one by one before); the running configuration stays.
pub fn config_refused(m: &Metrics, path: &str, errors: usize) {
    add(&m.reloads.config_refused, 1);
    tracing::warn!(event = "config_refused", path = %path, errors, "queues.toml edit refused; the running configuration stays.");
}

/// `retention_round`: a round of retention (trimming, idle consumers)
/// completed.
pub fn retention_round(m: &Metrics) {
    add(&m.retention_rounds, 1);
}

/// A wait for replicas after a step ended (`redis.wait_replicas`).
pub fn replicas_waited(m: &Metrics, took: Duration) {
    add(&m.redis.replica_waits, 1);
    add(&m.redis.replica_wait_micros, took.as_micros() as u64);
}

/// `replicas_short`: fewer replicas than asked for had a step within the
/// timeout; the host goes on without waiting for a while.
pub fn replicas_short(
    m: &Metrics,
    key: &str,
    wanted: u32,
    got: u32,
    timeout: Duration,
    pause: Duration,
) {
    add(&m.redis.replica_shortfalls, 1);
    tracing::warn!(event = "replicas_short", key = %key, wanted, got, timeout_ms = timeout.as_millis() as u64, pause_ms = pause.as_millis() as u64, "Fewer replicas than redis.wait_replicas acknowledged a step in time; going on without waiting for a while.");
}

/// `redis_master_changed`: the sentinels named another master, and the
/// host moved to it.
pub fn master_changed(m: &Metrics, from: &str, to: &str) {
    add(&m.redis.master_changes, 1);
    tracing::warn!(event = "redis_master_changed", from = %from, to = %to, "The Sentinel master changed; the host now uses the new one.");
}
