//! Scaling a queue's handler slots with its backlog, within its
//! `concurrency = { min, max }`: the decision ([`Scaler`]) is a pure
//! function of what each tick saw; [`scale`] runs it every [`SCALE_TICK`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::*;

use crate::metrics::QueueMetrics;

/// How often a queue's concurrency is reconsidered.
pub const SCALE_TICK: Duration = Duration::from_millis(500);

/// Ticks without a backlog, with at most half the slots busy, before a
/// queue's concurrency is lowered.
const IDLE_TICKS: u32 = 4;

/// What one tick saw of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Handler slots now.
    pub size: usize,
    /// Handler calls running now.
    pub busy: usize,
    /// Reads returned as many messages as there were free slots during the
    /// tick: more were likely waiting.
    pub backlog: bool,
    /// Attempts that succeeded during the tick, and those that failed or
    /// were retried.
    pub good: u64,
    pub bad: u64,
}

/// The scaling decision, and what it remembers between ticks.
#[derive(Debug, Default)]
pub struct Scaler {
    /// Ticks in a row without a backlog and with at most half the slots
    /// busy.
    idle: u32,
}

impl Scaler {
    /// The number of slots after a tick that saw `seen`, within `min` and
    /// `max`: up by half (at least one) while a backlog persists, the slots
    /// are busy and the handlers keep up (no more failed or retried
    /// attempts than successes: more slots would not help a remote that
    /// is failing); halved after [`IDLE_TICKS`] ticks without a backlog and
    /// with at most half the slots busy. Equal bounds fix the size.
    pub fn next(&mut self, seen: Observed, min: usize, max: usize) -> usize {
        let Observed {
            size,
            busy,
            backlog,
            good,
            bad,
        } = seen;
        let mut new = size.clamp(min, max);
        if min < max {
            if backlog && busy + 1 >= size && bad <= good && size < max {
                new = (size + (size / 2).max(1)).min(max);
                self.idle = 0;
            } else if !backlog && busy * 2 <= size {
                self.idle += 1;
                if self.idle >= IDLE_TICKS && size > min {
                    new = (size / 2).max(min);
                    self.idle = 0;
                }
            } else {
                self.idle = 0;
            }
        }
        new
    }
}

/// Scales a queue's handler slots with [`Scaler`] every [`SCALE_TICK`],
/// within the bounds its runtime has now, until `stop`. Each change is
/// logged and counted.
pub async fn scale(
    runtime: Arc<ArcSwap<QueueRuntime>>,
    slots: Arc<Slots>,
    metrics: Arc<QueueMetrics>,
    stop: CancellationToken,
) {
    let bounds = move || {
        let queue = runtime.load().queue.clone();
        let (min, max) = (queue.concurrency_min as usize, queue.concurrency as usize);
        (queue.name.clone(), min, max)
    };
    scale_within(bounds, slots, metrics, stop).await
}

/// [`scale`], with the queue's name and bounds read from `bounds` at each
/// tick.
async fn scale_within(
    bounds: impl Fn() -> (String, usize, usize),
    slots: Arc<Slots>,
    metrics: Arc<QueueMetrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(SCALE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = metrics.snapshot();
    let mut last_full = metrics.reads_full.load(Ordering::Relaxed);
    let mut scaler = Scaler::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (name, min, max) = bounds();
        let now = metrics.snapshot();
        let full = metrics.reads_full.load(Ordering::Relaxed);
        let seen = Observed {
            size: slots.size(),
            busy: now.in_flight as usize,
            backlog: full > last_full,
            good: now.succeeded - last.succeeded,
            bad: (now.failed - last.failed) + (now.retried - last.retried),
        };
        (last, last_full) = (now, full);
        let new = scaler.next(seen, min, max);
        let size = seen.size;
        if new != size {
            slots.resize(new);
            crate::events::scaled(
                &metrics,
                &crate::events::Scaling {
                    queue: &name,
                    from: size,
                    to: new,
                    min,
                    max,
                    busy: seen.busy,
                    backlog: seen.backlog,
                },
            );
        }
        metrics.concurrency.store(new as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(size: usize, busy: usize, backlog: bool, good: u64, bad: u64) -> Observed {
        Observed {
            size,
            busy,
            backlog,
            good,
            bad,
        }
    }

    /// Ticks one after another: (what the tick saw, the size after it).
    #[test]
    fn decisions_tick_by_tick() {
        let (min, max) = (2, 10);
        let mut s = Scaler::default();
        let ticks = [
            // A backlog with every slot busy and handlers keeping up: up by
            // half, at least one, to the max.
            (seen(2, 2, true, 10, 0), 3),
            (seen(3, 2, true, 10, 0), 4),
            (seen(4, 4, true, 10, 2), 6),
            (seen(6, 6, true, 10, 0), 9),
            (seen(9, 9, true, 10, 0), 10),
            (seen(10, 10, true, 10, 0), 10),
            // A backlog, but more failures than successes: no more slots.
            (seen(10, 10, true, 1, 5), 10),
            // Idle: halved after four quiet ticks, not before.
            (seen(10, 3, false, 0, 0), 10),
            (seen(10, 3, false, 0, 0), 10),
            (seen(10, 3, false, 0, 0), 10),
            (seen(10, 3, false, 0, 0), 5),
            // A busy tick in between starts the count again.
            (seen(5, 2, false, 0, 0), 5),
            (seen(5, 5, false, 9, 0), 5),
            (seen(5, 0, false, 0, 0), 5),
            (seen(5, 0, false, 0, 0), 5),
            (seen(5, 0, false, 0, 0), 5),
            (seen(5, 0, false, 0, 0), 2),
            // Never below the min.
            (seen(2, 0, false, 0, 0), 2),
            (seen(2, 0, false, 0, 0), 2),
            (seen(2, 0, false, 0, 0), 2),
            (seen(2, 0, false, 0, 0), 2),
        ];
        for (i, (observed, want)) in ticks.into_iter().enumerate() {
            assert_eq!(s.next(observed, min, max), want, "tick {i}: {observed:?}");
        }
    }

    #[test]
    fn bounds_win() {
        let mut s = Scaler::default();
        // Equal bounds fix the size, backlog or not.
        assert_eq!(s.next(seen(4, 4, true, 9, 0), 4, 4), 4);
        // A size outside new bounds (an edit of queues.toml) is brought in.
        assert_eq!(s.next(seen(12, 0, false, 0, 0), 2, 8), 8);
        assert_eq!(s.next(seen(1, 1, false, 0, 0), 2, 8), 2);
    }

    /// The loop on tokio's paused clock: a backlog scales the slots up a
    /// tick at a time; once it is gone they come down again.
    #[tokio::test(start_paused = true)]
    async fn the_loop_scales_on_its_ticks() {
        let slots = Arc::new(Slots::new(1));
        let metrics = Arc::new(QueueMetrics::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(scale_within(
            || ("Q".to_string(), 1, 8),
            slots.clone(),
            metrics.clone(),
            stop.clone(),
        ));
        // The first tick is at once; let it pass with nothing seen.
        tokio::time::sleep(SCALE_TICK / 2).await;
        let mut sizes = Vec::new();
        for _ in 0..5 {
            metrics
                .in_flight
                .store(slots.size() as u64, Ordering::Relaxed);
            QueueMetrics::add(&metrics.reads_full);
            metrics.succeeded.fetch_add(10, Ordering::Relaxed);
            tokio::time::sleep(SCALE_TICK).await;
            sizes.push(slots.size());
        }
        assert_eq!(sizes, [2, 3, 4, 6, 8]);
        assert_eq!(metrics.scaled_up.load(Ordering::Relaxed), 5);
        metrics.in_flight.store(0, Ordering::Relaxed);
        tokio::time::sleep(SCALE_TICK * IDLE_TICKS).await;
        assert_eq!(slots.size(), 4);
        assert_eq!(metrics.concurrency.load(Ordering::Relaxed), 4);
        assert_eq!(metrics.scaled_down.load(Ordering::Relaxed), 1);
        stop.cancel();
        task.await.unwrap();
    }
}
