//! Redis Streams: the key layout, reading entries, consumer groups, and the
//! atomic steps the router and the queue workers take.
//!
//! # Key layout
//!
//! With the default prefix `switchyard`, ingress stream `chat:events` and
//! one partition on one node (see [`layout`] for partitions and clusters):
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `chat:events` | stream | ingress: the chat server XADDs here (group `switchyard`) |
//! | `switchyard:queue:<Queue>` | stream | one per queue (group `switchyard`) |
//! | `switchyard:dead` | stream | dead letters, with the reason and the original fields |
//! | `switchyard:errors:<Queue>` | hash | failures (JSON) of each message that failed and is pending a retry |
//! | `switchyard:kv:{<Queue>}:…` | strings, a sorted set | the queue's key-value state: one key per bucket and key, and an index of them |
//! | `switchyard:partitions` | hash | every partition used, and whether it is drained ([`registry`]) |
//! | `chat:events:partitions` | list | the partitions' ingress streams, for producers |
//!
//! Every consumer group is named after the prefix and created at the start of
//! its stream's history, so entries added before the host first ran are
//! handled too.

pub mod dead;
pub mod ingress;
pub mod inspect;
pub mod layout;
pub mod queue;
pub mod reclaim;
pub mod registry;
pub mod retention;

pub use crate::redis::reply::{Entry, parse_entries, parse_read};
pub use layout::{Keys, Partition};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::Value;
use redis::aio::ConnectionLike;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::redis::{Conn, StreamError, StreamResult};

/// After a step (an ingress entry routed, a message settled), waits until
/// `redis.wait_replicas` replicas have it, at most `redis.wait_timeout`,
/// so that a failover right after the step does not undo it. When the
/// replicas do not answer in time the host goes on (the step is done on the
/// master) and does not wait again for [`SHORT_PAUSE`]: a host whose
/// replicas are gone keeps working, slower by one timeout every pause, not
/// one per step. Shared by a host's loops.
#[derive(Clone)]
pub struct Replicas {
    /// None: steps never wait.
    settings: Option<Arc<ArcSwap<Config>>>,
    metrics: Arc<Metrics>,
    /// Until when (ms since the epoch) steps do not wait.
    short_until: Arc<AtomicU64>,
}

/// How long the host goes on without waiting after replicas fell short.
pub const SHORT_PAUSE: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas").finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Replicas {
    pub fn new(settings: Arc<ArcSwap<Config>>, metrics: Arc<Metrics>) -> Self {
        Replicas {
            settings: Some(settings),
            metrics,
            short_until: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Steps that never wait for replicas.
    pub fn off() -> Self {
        Replicas {
            settings: None,
            metrics: Default::default(),
            short_until: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Waits for the replicas of `key`'s node, as configured now.
    pub async fn after_step(&self, conn: &mut Conn, key: &str) {
        let Some(settings) = &self.settings else {
            return;
        };
        let (wanted, timeout) = {
            let s = settings.load();
            (s.redis.wait_replicas, s.redis.wait_timeout)
        };
        if wanted == 0 || now_ms() < self.short_until.load(Ordering::Relaxed) {
            return;
        }
        let started = std::time::Instant::now();
        let got = conn.wait_replicas(key, wanted, timeout).await;
        crate::events::replicas_waited(&self.metrics, started.elapsed());
        let got = match got {
            Ok(n) => n,
            // The step is done; Redis failing now is the next step's
            // problem, met there.
            Err(e) => {
                tracing::debug!(error = %e, "Waiting for replicas failed.");
                return;
            }
        };
        if got < wanted {
            self.short_until
                .store(now_ms() + SHORT_PAUSE.as_millis() as u64, Ordering::Relaxed);
            crate::events::replicas_short(&self.metrics, key, wanted, got, timeout, SHORT_PAUSE);
        }
    }
}

pub use dead::dead_fields;

/// Creates `group` on `stream` at the start of its history, creating the
/// stream if needed. An existing group is left as it is.
pub async fn ensure_group<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
) -> StreamResult<()> {
    let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(StreamError::redis(
            format!("creating group {group:?} on stream {stream:?}"),
            &e,
        )),
    }
}

/// The current time as RFC 3339, for records operators read.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
