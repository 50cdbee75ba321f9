//! In-process counters of what the router and each queue did since start.
//! Label values are queue names and outcomes, never message ids.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::kinds::{Capability, FailureKind};
use crate::reason::DeadClass;

/// Counters of one queue.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    /// Handler calls started.
    pub attempts: AtomicU64,
    /// Messages handled and acknowledged.
    pub succeeded: AtomicU64,
    /// Attempts the plugin asked to retry.
    pub retried: AtomicU64,
    /// Attempts that trapped, timed out or hit the memory cap.
    pub failed: AtomicU64,
    /// Messages the plugin rejected (then dead-lettered).
    pub rejected: AtomicU64,
    /// Messages moved to the dead-letter stream, for any reason.
    pub dead_lettered: AtomicU64,
    /// The same by class (the index of [`DeadClass::ALL`]).
    pub dead_lettered_by: [AtomicU64; DeadClass::ALL.len()],
    /// Messages taken over from a consumer that went quiet.
    pub reclaimed: AtomicU64,
    /// Handler calls running now.
    pub in_flight: AtomicU64,
    /// Times the queue's consumer group was found missing.
    pub group_missing: AtomicU64,
    /// Outbound HTTP requests its plugin sent (allowed).
    pub http_requests: AtomicU64,
    /// Outbound HTTP requests refused (not granted, not public, over a
    /// limit).
    pub http_denied: AtomicU64,
    /// Follow-up messages published (with their delivery's ack).
    pub published: AtomicU64,
    /// SQL statements its plugin ran (transaction control included).
    pub sql_statements: AtomicU64,
    /// Of those, the ones that failed (refused, timed out, no connection).
    pub sql_failed: AtomicU64,
    /// Mails the relay accepted.
    pub mails_sent: AtomicU64,
    /// Mails refused, invalid, or not sent (relay unreachable).
    pub mails_failed: AtomicU64,
    /// Failed attempts by kind (the index of [`FailureKind::ALL`]).
    pub failed_by_kind: [AtomicU64; FailureKind::ALL.len()],
    /// How long handler calls took.
    pub duration: Histogram,
    /// How long its plugin's capability calls took (the index of
    /// [`Capability::ALL`]; publishing is not timed: it goes out with the
    /// ack).
    pub capability_duration: [Histogram; Capability::ALL.len()],
    /// Key-value calls, and those refused (no grant).
    pub kv_calls: AtomicU64,
    pub kv_denied: AtomicU64,
    /// SQL, mail and publish calls refused (no grant, or for publish a
    /// message type not granted or too many).
    pub sql_denied: AtomicU64,
    pub mail_denied: AtomicU64,
    pub publish_denied: AtomicU64,
    /// Handler slots now.
    pub concurrency: AtomicU64,
    /// Reads that returned as many messages as there were free slots: more
    /// were likely waiting.
    pub reads_full: AtomicU64,
    /// Times the queue's concurrency was raised, and lowered, by scaling.
    pub scaled_up: AtomicU64,
    pub scaled_down: AtomicU64,
    /// The plugin the queue runs now.
    pub plugin: std::sync::RwLock<Option<PluginInfo>>,
    /// The last plugin file refused for this queue: when (Unix seconds) and
    /// why.
    pub last_refusal: std::sync::RwLock<Option<(f64, String)>>,
    /// Messages settled (acked or dead-lettered after an attempt), by the
    /// content hash of the plugin version that made the attempt.
    by_plugin: std::sync::Mutex<BTreeMap<String, u64>>,
}

/// Upper bounds of the handler duration histogram's buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// A histogram of durations with [`DURATION_BUCKETS`], lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last one past every
    /// bound.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bound (the last is `+Inf`, the total), and the
    /// sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0;
        let counts = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        (counts, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6)
    }
}

/// A snapshot of [`QueueMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub attempts: u64,
    pub succeeded: u64,
    pub retried: u64,
    pub failed: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
    pub reclaimed: u64,
    pub in_flight: u64,
    pub http_requests: u64,
    pub http_denied: u64,
    pub published: u64,
    pub sql_statements: u64,
    pub sql_failed: u64,
    pub mails_sent: u64,
    pub mails_failed: u64,
}

impl QueueMetrics {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Times one call of `capability`.
    pub fn timed(&self, capability: Capability, started: std::time::Instant) {
        self.capability_duration[capability.index()].observe(started.elapsed());
    }

    /// Counts a message settled by plugin version `hash`.
    pub fn settled_by(&self, hash: &str) {
        let mut map = self.by_plugin.lock().expect("metrics lock");
        match map.get_mut(hash) {
            Some(n) => *n += 1,
            None => {
                map.insert(hash.to_owned(), 1);
            }
        }
    }

    /// Records a plugin file refused for this queue.
    pub fn refused(&self, reason: &str) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        *self.last_refusal.write().expect("metrics lock") =
            Some((at, crate::text::bounded(reason, 2048)));
    }

    /// Records the plugin the queue runs now (the time it was first
    /// loaded is kept while the version stays).
    pub fn runs(&self, mut info: PluginInfo) {
        let mut plugin = self.plugin.write().expect("metrics lock");
        if let Some(old) = plugin.as_ref()
            && old.version == info.version
        {
            info.loaded_at = old.loaded_at;
        }
        *plugin = Some(info);
    }

    /// Messages settled per plugin version.
    pub fn by_plugin(&self) -> BTreeMap<String, u64> {
        self.by_plugin.lock().expect("metrics lock").clone()
    }

    pub fn snapshot(&self) -> QueueCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QueueCounts {
            attempts: get(&self.attempts),
            succeeded: get(&self.succeeded),
            retried: get(&self.retried),
            failed: get(&self.failed),
            rejected: get(&self.rejected),
            dead_lettered: get(&self.dead_lettered),
            reclaimed: get(&self.reclaimed),
            in_flight: get(&self.in_flight),
            http_requests: get(&self.http_requests),
            http_denied: get(&self.http_denied),
            published: get(&self.published),
            sql_statements: get(&self.sql_statements),
            sql_failed: get(&self.sql_failed),
            mails_sent: get(&self.mails_sent),
            mails_failed: get(&self.mails_failed),
        }
    }
}

/// Counters of the router.
#[derive(Debug, Default)]
pub struct RouterMetrics {
    /// Ingress entries fanned out.
    pub routed: AtomicU64,
    /// Ingress entries dead-lettered (malformed or unroutable).
    pub dead_lettered: AtomicU64,
    /// Dead letters the router wrote, by class (the index of
    /// [`DeadClass::ALL`]; the router's are [`DeadClass::ROUTER`]).
    pub dead_lettered_by: [AtomicU64; DeadClass::ALL.len()],
    /// Ingress entries taken over from a router that went quiet.
    pub reclaimed: AtomicU64,
}

/// Counters of the host's use of Redis beyond commands.
#[derive(Debug, Default)]
pub struct RedisMetrics {
    /// Waits for replicas after a step (`redis.wait_replicas`).
    pub replica_waits: AtomicU64,
    /// Their total time, in microseconds.
    pub replica_wait_micros: AtomicU64,
    /// Waits that ended with fewer replicas than asked for.
    pub replica_shortfalls: AtomicU64,
    /// Times a Sentinel named a new master and the host moved to it.
    pub master_changes: AtomicU64,
}

/// Counters of plugin and configuration reloads.
#[derive(Debug, Default)]
pub struct ReloadMetrics {
    /// Plugins compiled (at start or on a change).
    pub compiles: AtomicU64,
    /// Plugins loaded from the compiled-code cache instead.
    pub cache_hits: AtomicU64,
    /// New plugin versions swapped in.
    pub plugin_swaps: AtomicU64,
    /// Plugins started on Winch's code whose Cranelift code took its place.
    pub plugin_optimized: AtomicU64,
    /// Plugin versions Cranelift failed to compile (they keep Winch's code).
    pub plugin_not_optimized: AtomicU64,
    /// Plugin files refused (the running version kept serving).
    pub plugin_refused: AtomicU64,
    /// queues.toml edits applied.
    pub config_applied: AtomicU64,
    /// queues.toml edits refused (the running configuration kept).
    pub config_refused: AtomicU64,
}

impl ReloadMetrics {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The plugin a queue runs now.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// Its content hash.
    pub version: String,
    /// The contract version it was built against.
    pub contract: String,
    /// When it was loaded, Unix seconds.
    pub loaded_at: f64,
    /// How long its compilation took (0 from the cache).
    pub compile_seconds: f64,
}

/// Every counter of one host.
#[derive(Debug, Default)]
pub struct Metrics {
    pub router: RouterMetrics,
    pub reloads: ReloadMetrics,
    pub redis: RedisMetrics,
    /// Rounds of retention (trimming, idle consumers) completed.
    pub retention_rounds: AtomicU64,
    queues: std::sync::RwLock<BTreeMap<String, Arc<QueueMetrics>>>,
}

impl Metrics {
    /// The counters of a queue, created on first use.
    pub fn queue(&self, name: &str) -> Arc<QueueMetrics> {
        if let Some(m) = self.queues.read().expect("metrics lock").get(name) {
            return m.clone();
        }
        self.queues
            .write()
            .expect("metrics lock")
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// A snapshot of every queue's counters.
    pub fn queues(&self) -> BTreeMap<String, QueueCounts> {
        self.queues
            .read()
            .expect("metrics lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.snapshot()))
            .collect()
    }
}
