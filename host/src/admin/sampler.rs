//! The sampler behind the dashboard's charts: every [`FINE`] it reads each
//! queue's counters and gauges and the dead letters by class into the
//! admin state's [`History`](super::history::History). It runs only when
//! the dashboard can be read (a token is set): its reads of Redis (the
//! shared stats, at most once per `stats_interval`) serve nobody else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::history::{DeadCounts, FINE, ROUTER, Reading};
use super::state::{AdminState, Stats};
use crate::reason::DeadClass;

/// The wall clock in unix seconds: the points' times, and the page's "now"
/// (the browser's clock may differ from the host's).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Takes a point every [`FINE`] until `stop`.
pub async fn sample(state: Arc<AdminState>, stop: CancellationToken) {
    // The counters where they stand now (zero on a fresh host), without
    // Redis: the first point then counts everything since the start.
    record(&state, None);
    // The first point one interval after the start: by then the host has
    // usually connected, and a read of Redis before it would be kept as
    // the shared stats (Redis unreachable, no groups) for a while.
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + FINE, FINE);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let stats = state.stats().await;
        record(&state, Some(&stats));
    }
}

/// One reading of every queue into the history; the gauges from `stats`
/// (none without).
fn record(state: &AdminState, stats: Option<&Stats>) {
    let config = state.config.load_full();
    let from_redis = |name: &str| {
        stats
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.queues.iter().find(|(n, _, _)| n == name))
            .map(|(_, q, _)| (q.lag, q.pending))
    };
    let mut readings = BTreeMap::new();
    let mut dead = DeadCounts::new();
    for name in config.queues.keys() {
        let m = state.metrics.queue(name);
        let c = m.snapshot();
        let redis = from_redis(name);
        readings.insert(
            name.clone(),
            Reading {
                handled: c.succeeded,
                failed: c.retried + c.rejected + c.failed,
                backlog: redis.and_then(|r| r.0),
                pending: redis.map(|r| r.1),
                concurrency: m.concurrency.load(Ordering::Relaxed),
            },
        );
        count_dead(&mut dead, name, &m.dead_lettered_by);
    }
    count_dead(&mut dead, ROUTER, &state.metrics.router.dead_lettered_by);
    state
        .history
        .lock()
        .expect("history lock")
        .record(unix_now(), &readings, &dead);
}

fn count_dead(into: &mut DeadCounts, queue: &str, by_class: &[AtomicU64; DeadClass::ALL.len()]) {
    for class in DeadClass::ALL {
        let n = by_class[class.index()].load(Ordering::Relaxed);
        if n > 0 {
            into.insert((queue.to_owned(), class.label()), n);
        }
    }
}
