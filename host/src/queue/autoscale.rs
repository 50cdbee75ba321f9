//! Scaling a queue's handler slots with its backlog, within its
//! `concurrency = { min, max }`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::*;

use crate::metrics::QueueMetrics;

/// How often a queue's concurrency is reconsidered.
const SCALE_TICK: Duration = Duration::from_millis(500);

/// Ticks without a backlog, with at most half the slots busy, before a
/// queue's concurrency is lowered.
const IDLE_TICKS: u32 = 4;

/// Scales a queue's handler slots between its `concurrency.min` and
/// `.max` until `stop`: up by half (at least one) while a backlog persists
/// (reads keep returning as many messages as there were free slots), the
/// slots are busy and its handlers keep up (no more failed or retried
/// attempts than successes in the tick: more slots would not help a
/// remote that is failing); halved after
/// [`IDLE_TICKS`] ticks without a backlog and with at most half the slots
/// busy. A queue whose min and max are equal keeps its size. Each change
/// is logged and counted.
pub async fn scale(
    runtime: Arc<ArcSwap<QueueRuntime>>,
    slots: Arc<Slots>,
    metrics: Arc<QueueMetrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(SCALE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = metrics.snapshot();
    let mut last_full = metrics.reads_full.load(Ordering::Relaxed);
    let mut idle = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let queue = runtime.load().queue.clone();
        let (min, max) = (queue.concurrency_min as usize, queue.concurrency as usize);
        let now = metrics.snapshot();
        let full = metrics.reads_full.load(Ordering::Relaxed);
        let backlog = full > last_full;
        let good = now.succeeded - last.succeeded;
        let bad = (now.failed - last.failed) + (now.retried - last.retried);
        (last, last_full) = (now, full);
        let size = slots.size();
        let busy = now.in_flight as usize;
        let mut new = size.clamp(min, max);
        if min < max {
            if backlog && busy + 1 >= size && bad <= good && size < max {
                new = (size + (size / 2).max(1)).min(max);
                idle = 0;
            } else if !backlog && busy * 2 <= size {
                idle += 1;
                if idle >= IDLE_TICKS && size > min {
                    new = (size / 2).max(min);
                    idle = 0;
                }
            } else {
                idle = 0;
            }
        }
        if new != size {
            slots.resize(new);
            let (direction, counter) = if new > size {
                ("up", &metrics.scaled_up)
            } else {
                ("down", &metrics.scaled_down)
            };
            QueueMetrics::add(counter);
            tracing::info!(queue = %queue.name, from = size, to = new, min, max, busy, backlog, direction, "Concurrency changed.");
        }
        metrics.concurrency.store(new as u64, Ordering::Relaxed);
    }
}
