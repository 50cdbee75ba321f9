//! A queue's reading loop in one partition: reads new messages and takes
//! over abandoned ones and due retries, one for each free handler slot,
//! and hands each to a handler task.
//!
//! A queue has a loop per partition, and they share its slots. A loop
//! whose stream has nothing new must not sit on slots another partition's
//! backlog could use, so beside other loops it waits in two ways: while
//! its reads find messages it takes every free slot and reads that many at
//! once, without blocking; once a read finds none, it holds no slot and
//! blocks on a read of one message, which then waits for a free slot (its
//! lease renewed meanwhile). So a host holds at most `concurrency` +
//! `partitions` messages of a queue at once, the extra ones waiting for a
//! slot. The only loop of a queue (one partition) blocks holding the free
//! slots and reads as many messages as arrive at once.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

use crate::config::{Config, MissingGroup};
use crate::events;
use crate::message::MAX_FIELDS;
use crate::metrics::QueueMetrics;
use crate::plugin::PluginEngine;
use crate::redis::bounded::BoundedReader;
use crate::redis::read::{Bounds, ReadEntry};
use crate::redis::{Backoff, Health, RedisFailure, StreamResult};
use crate::stream::Partition;
use crate::stream::queue::QueueStream;
use crate::stream::reclaim::ReclaimSchedule;

/// The tasks of one queue's workers besides its reading loop.
#[derive(Debug, Clone, Default)]
pub struct WorkerTasks {
    /// Handler calls: shutdown and a queue's removal wait for these.
    pub handlers: TaskTracker,
    /// Lease renewals and batched acks: they serve the handlers, and stop
    /// when `bookkeeping_done` fires after the handlers are done.
    pub bookkeeping: TaskTracker,
    pub bookkeeping_done: CancellationToken,
    /// Fired when the reading loop has stopped: no handler starts after.
    pub reading_stopped: CancellationToken,
}

impl WorkerTasks {
    /// Once the reading loop has stopped and every handler is done, stops
    /// the bookkeeping (the acks of the last handlers go out first: the ack
    /// task ends when its last sender is gone).
    pub async fn wind_down(&self) {
        self.reading_stopped.cancelled().await;
        self.handlers.close();
        self.handlers.wait().await;
        self.bookkeeping_done.cancel();
        self.bookkeeping.close();
        self.bookkeeping.wait().await;
    }

    /// Whether every task is done: the reading loop, the handlers and the
    /// bookkeeping.
    pub fn is_done(&self) -> bool {
        self.reading_stopped.is_cancelled()
            && self.handlers.is_closed()
            && self.handlers.is_empty()
            && self.bookkeeping.is_closed()
            && self.bookkeeping.is_empty()
    }
}

/// The workers of one queue in one host.
pub struct QueueWorker {
    shared: Arc<Shared>,
    /// Blocking reads of new messages, bounded by the queue's
    /// `max_entry_kib`: a connection of its own.
    reader: BoundedReader,
    acks: mpsc::UnboundedReceiver<AckRequest>,
}

/// What every handler task of the queue needs.
pub(super) struct Shared {
    pub(super) name: String,
    pub(super) runtime: Arc<ArcSwap<QueueRuntime>>,
    pub(super) slots: Arc<Slots>,
    pub(super) engine: PluginEngine,
    pub(super) stream: QueueStream,
    pub(super) metrics: Arc<QueueMetrics>,
    pub(super) health: Arc<Health>,
    /// The running configuration, for `host.on_missing_group`.
    pub(super) settings: Arc<ArcSwap<Config>>,
    /// Entry ids being handled now, whose leases are renewed.
    pub(super) in_flight: Mutex<HashSet<String>>,
    /// Held while leases are renewed, and taken before a retry is scheduled:
    /// a renewal in flight for a message whose handler just finished would
    /// otherwise reset the idle clock the retry sets.
    pub(super) renewing: tokio::sync::Mutex<()>,
    /// The group was found missing and that was said; said again only once
    /// it has been back.
    pub(super) group_reported: std::sync::atomic::AtomicBool,
    /// To the task that acks handled messages in batches.
    pub(super) acks: mpsc::UnboundedSender<AckRequest>,
}

impl std::fmt::Debug for QueueWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueWorker")
            .field("queue", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl QueueWorker {
    /// The workers of queue `name`, running what `runtime` holds within
    /// `slots`.
    pub fn new(
        name: &str,
        runtime: Arc<ArcSwap<QueueRuntime>>,
        slots: Arc<Slots>,
        host: &QueueContext,
        partition: &Partition,
    ) -> Self {
        let (ack_tx, acks) = mpsc::unbounded_channel();
        QueueWorker {
            acks,
            shared: Arc::new(Shared {
                name: name.to_owned(),
                runtime,
                slots,
                engine: host.engine.clone(),
                stream: QueueStream::new(
                    host.conn.clone(),
                    &host.keys,
                    partition,
                    name,
                    &host.consumer,
                    host.replicas.clone(),
                ),
                metrics: host.metrics.queue(name),
                health: host.health.clone(),
                settings: host.settings.clone(),
                in_flight: Mutex::new(HashSet::new()),
                renewing: tokio::sync::Mutex::new(()),
                group_reported: std::sync::atomic::AtomicBool::new(false),
                acks: ack_tx,
            }),
            reader: BoundedReader::new(&host.redis),
        }
    }

    /// Reads and dispatches until `cancel` fires. Handler calls run as tasks
    /// on `tasks.handlers`, so shutdown can wait for them. A message is read
    /// only when a handler slot is free for it: nothing waits in a local
    /// buffer while its visibility timeout runs.
    pub async fn run(mut self, cancel: CancellationToken, tasks: WorkerTasks) {
        // However the loop ends, say so: the queue's removal and shutdown
        // wait for it before they stop the bookkeeping.
        let _stopped = tasks.reading_stopped.clone().drop_guard();
        let name = self.shared.name.clone();
        let semaphore = self.shared.slots.semaphore.clone();
        let _reading = self.shared.slots.reader();
        // Leases are renewed while handlers run, including after this loop
        // stops reading (shutdown, or the queue removed), until the handlers
        // are done.
        tasks.bookkeeping.spawn(
            self.shared
                .clone()
                .renew_leases(tasks.bookkeeping_done.clone()),
        );
        // Ends when the last handler is done with the queue's shared state.
        tasks.bookkeeping.spawn(ack_batches(
            self.shared.stream.clone(),
            self.shared.metrics.clone(),
            self.acks,
        ));
        let mut reclaim = ReclaimSchedule::new(tokio::time::Instant::now());
        let mut backoff = Backoff::default();
        // Whether the last read found nothing new: the loop then waits for
        // a message without holding slots.
        let mut idle = false;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let queue = self.shared.runtime.load().queue.clone();
            // Abandoned messages and due retries are looked for this often;
            // new messages are waited for in between.
            let interval = ReclaimSchedule::queue_interval(queue.visibility_timeout);
            let bounds = Bounds {
                max_bytes: queue.max_entry_bytes,
                // The router adds `type` and `id` to a copy when the
                // producer left them out.
                max_fields: MAX_FIELDS + 2,
            };
            // The only loop on the queue's slots (one partition) waits for
            // new messages holding the free slots, reading as many at once.
            let alone = self.shared.slots.readers() <= 1;
            if idle && !alone && !reclaim.is_due(tokio::time::Instant::now()) {
                let block = reclaim.read_wait(
                    tokio::time::Instant::now(),
                    Duration::from_millis(10),
                    interval,
                );
                // Not given up for a shutdown: a message Redis hands over
                // is handled (the read waits at most `block`).
                let read = self
                    .reader
                    .read_new(
                        &self.shared.stream.stream,
                        self.shared.stream.group(),
                        &self.shared.stream.consumer,
                        1,
                        block,
                        bounds,
                    )
                    .await;
                let entries = match read {
                    Ok(entries) => entries,
                    Err(e) => {
                        if self.shared.failed(e, &mut backoff, &cancel).await {
                            break;
                        }
                        continue;
                    }
                };
                self.shared.read_ok(&mut backoff);
                for entry in entries {
                    self.shared
                        .in_flight
                        .lock()
                        .expect("in-flight lock")
                        .insert(entry.id().to_owned());
                    // It waits for a slot on the handlers' tracker, so a
                    // shutdown or a removal drains it like a running one.
                    let shared = self.shared.clone();
                    let slots = semaphore.clone();
                    tasks.handlers.spawn(async move {
                        let permit = slots.acquire_owned().await.expect("semaphore never closes");
                        shared.handle(entry, permit).await;
                    });
                    idle = false;
                }
                continue;
            }
            let first = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                permit = semaphore.clone().acquire_owned() => permit.expect("semaphore never closes"),
            };
            let mut permits = vec![first];
            while let Ok(p) = semaphore.clone().try_acquire_owned() {
                permits.push(p);
            }
            if cancel.is_cancelled() {
                break;
            }
            let batch = async {
                let now = tokio::time::Instant::now();
                if reclaim.is_due(now) {
                    let claimed = self
                        .shared
                        .stream
                        .claim_idle(
                            queue.visibility_timeout,
                            reclaim.cursor(),
                            permits.len(),
                            queue.max_entry_bytes,
                        )
                        .await?;
                    for id in &claimed.deleted {
                        tracing::error!(queue = %queue.name, entry_id = %id, "A pending message's entry was deleted from the stream before it was handled.");
                    }
                    if !claimed.deleted.is_empty() {
                        self.shared.stream.forget(&claimed.deleted).await?;
                    }
                    reclaim.looked(now, claimed.cursor, claimed.entries.len(), interval);
                    if !claimed.entries.is_empty() {
                        events::reclaimed(&self.shared.metrics, &name, claimed.entries.len());
                        return StreamResult::Ok((claimed.entries, true));
                    }
                }
                // Beside other loops, without waiting: a stream with
                // nothing new lets the slots go (see the module's comment).
                let block = if alone {
                    reclaim.read_wait(now, Duration::from_millis(10), interval)
                } else {
                    Duration::ZERO
                };
                let read = self
                    .reader
                    .read_new(
                        &self.shared.stream.stream,
                        self.shared.stream.group(),
                        &self.shared.stream.consumer,
                        permits.len(),
                        block,
                        bounds,
                    )
                    .await?;
                Ok((read, false))
            };
            let (batch, claimed): (Vec<ReadEntry>, bool) = match batch.await {
                Ok(b) => {
                    self.shared.read_ok(&mut backoff);
                    b
                }
                Err(e) => {
                    for permit in permits {
                        self.shared.slots.release(permit);
                    }
                    if self.shared.failed(e, &mut backoff, &cancel).await {
                        break;
                    }
                    continue;
                }
            };
            if !claimed {
                idle = batch.is_empty();
            }
            if !batch.is_empty() && batch.len() == permits.len() {
                QueueMetrics::add(&self.shared.metrics.reads_full);
            }
            let mut permits = permits.into_iter();
            for (entry, permit) in batch.into_iter().zip(permits.by_ref()) {
                let shared = self.shared.clone();
                shared
                    .in_flight
                    .lock()
                    .expect("in-flight lock")
                    .insert(entry.id().to_owned());
                tasks.handlers.spawn(async move {
                    shared.handle(entry, permit).await;
                });
            }
            // Slots the read did not fill go back the way a handler's do,
            // so that a lowered concurrency retires them.
            for permit in permits {
                self.shared.slots.release(permit);
            }
        }
        tracing::info!(queue = %name, "Queue worker stopped reading.");
    }
}

impl Shared {
    /// A read succeeded: Redis answers, and the group is there.
    fn read_ok(&self, backoff: &mut Backoff) {
        backoff.reset();
        self.health.ok();
        if self.group_reported.swap(false, Ordering::Relaxed) {
            tracing::info!(queue = %self.name, stream = %self.stream.stream, "The queue's consumer group is back; reading again.");
        }
    }

    /// A read failed: said (once per outage), then waited out. Returns
    /// whether the loop is to stop.
    async fn failed(
        &self,
        e: crate::redis::StreamError,
        backoff: &mut Backoff,
        cancel: &CancellationToken,
    ) -> bool {
        if e.kind == RedisFailure::MissingGroup {
            self.group_missing().await;
        } else {
            self.health.failed(&e);
        }
        tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tokio::time::sleep(backoff.delay()) => false,
        }
    }
}

impl Shared {
    /// The queue's consumer group is gone (Redis lost its data, or someone
    /// deleted it). Said loudly; recreated at the start of the stream, never
    /// at its end, only if the operator chose so.
    pub(super) async fn group_missing(&self) {
        let policy = self.settings.load().host.on_missing_group;
        if policy == MissingGroup::Stop && self.group_reported.swap(true, Ordering::Relaxed) {
            QueueMetrics::add(&self.metrics.group_missing);
            tracing::debug!(queue = %self.name, "The queue's consumer group is still missing.");
            return;
        }
        let recreate = policy == MissingGroup::Recreate;
        events::queue_group_missing(&self.metrics, &self.name, &self.stream.stream, recreate);
        if recreate && let Err(e) = self.stream.recreate_group().await {
            tracing::error!(queue = %self.name, error = %e, "Recreating the consumer group failed.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A removed queue's tasks are let go once they are done; until its
    /// reading loop stops and its handlers finish they are not.
    #[tokio::test]
    async fn tasks_are_done_once_wound_down() {
        let tasks = WorkerTasks::default();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        tasks.handlers.spawn(async move {
            let _ = released.await;
        });
        assert!(!tasks.is_done());
        tasks.reading_stopped.cancel();
        let winding = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.wind_down().await }
        });
        tokio::task::yield_now().await;
        assert!(!tasks.is_done(), "a handler still runs");
        release.send(()).unwrap();
        winding.await.unwrap();
        assert!(tasks.is_done());
    }
}
