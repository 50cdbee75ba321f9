//! Queue workers: read a queue's messages within its concurrency, run the
//! plugin on each in a fresh instance, and settle the outcome: ack, retry
//! later, or dead-letter.
//!
//! What to do with a delivery is decided by [`settlement`], a pure function
//! of what happened, the attempt, the queue's policy and the message's
//! failures so far; [`Shared::settle`] then writes it to Redis in one step.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admin::metrics::QueueMetrics;
use crate::config::{MissingGroup, QueueConfig};
use crate::message::MAX_FIELDS;
use crate::message::{Message, entry_bytes};
use crate::plugin::http::QueueHttp;
use crate::plugin::keyvalue::KeyValueStore;
use crate::plugin::{
    CallContext, Delivery, LoadedPlugin, Outcome, PluginEngine, Published, WarmPool,
};
use crate::redis_conn::{Backoff, Health, RedisFailure, StreamError, StreamResult};
use crate::router::human_size;
use crate::stream::bounded::BoundedReader;
use crate::stream::now_rfc3339;
use crate::stream::queue::{FailureHistory, QueueStream};
use crate::stream::read::{Bounds, ReadEntry};

/// What a queue runs with now: its settings and its plugin version. Swapped
/// whole on a reload; each message loads it once, at its start, so a message
/// runs on one version from start to end and the next message on the newest.
#[derive(Debug)]
pub struct QueueRuntime {
    pub queue: Arc<QueueConfig>,
    pub plugin: Arc<LoadedPlugin>,
    pub cx: CallContext,
    /// Instances kept between messages, if the queue reuses them.
    pub warm: Option<Arc<WarmPool>>,
    /// What to do if the queue's consumer group vanishes.
    pub on_missing_group: MissingGroup,
}

/// What every runtime of a queue is made with, besides its settings and
/// plugin.
#[derive(Debug, Clone)]
pub struct RuntimeParts {
    pub on_missing_group: MissingGroup,
    /// For the queue's key-value state.
    pub conn: redis::aio::ConnectionManager,
    pub prefix: String,
    /// The largest message a plugin may publish: the ingress bound.
    pub max_publish_bytes: usize,
    pub metrics: Arc<QueueMetrics>,
    /// Database pools and mail relays, kept across reloads.
    pub pools: Arc<crate::plugin::pools::Pools>,
}

impl QueueRuntime {
    pub fn new(queue: QueueConfig, plugin: Arc<LoadedPlugin>, parts: &RuntimeParts) -> Self {
        let secrets = Arc::new(crate::secrets::Secrets::new(
            queue.secrets.iter().map(|s| s.value.as_str()),
        ));
        let cx = CallContext {
            queue: queue.name.as_str().into(),
            timeout: queue.handler_timeout,
            memory_bytes: queue.memory_mib as usize * 1024 * 1024,
            config: Arc::new(queue.plugin_config.clone()),
            http: Arc::new(QueueHttp::new(
                &queue.name,
                queue.http.clone(),
                secrets.clone(),
                parts.metrics.clone(),
            )),
            secrets,
            keyvalue: queue.keyvalue.clone().map(|grant| {
                KeyValueStore::new(parts.conn.clone(), &parts.prefix, &queue.name, grant)
            }),
            publish: Arc::new(queue.publish.clone()),
            max_publish_bytes: parts.max_publish_bytes,
            sql: parts.pools.sql(&queue, &parts.metrics),
            mail: parts.pools.mail(&queue, &parts.metrics),
            metrics: parts.metrics.clone(),
        };
        parts.metrics.runs(crate::admin::metrics::PluginInfo {
            version: plugin.hash.clone(),
            contract: plugin.contract().to_owned(),
            loaded_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            compile_seconds: plugin.compile_time.as_secs_f64(),
        });
        QueueRuntime {
            warm: queue.reuse_instances.then(|| Arc::new(WarmPool::default())),
            queue: Arc::new(queue),
            plugin,
            cx,
            on_missing_group: parts.on_missing_group,
        }
    }
}

/// A queue's handler slots: its concurrency, resizable while messages run.
#[derive(Debug)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    size: Mutex<usize>,
    /// Slots to retire as running handlers finish (after a decrease that
    /// found them busy).
    deficit: AtomicUsize,
}

impl Slots {
    pub fn new(size: usize) -> Self {
        Slots {
            semaphore: Arc::new(Semaphore::new(size)),
            size: Mutex::new(size),
            deficit: AtomicUsize::new(0),
        }
    }

    /// Changes the number of slots; running handlers are never interrupted.
    pub fn resize(&self, new: usize) {
        let mut size = self.size.lock().expect("slots lock");
        if new > *size {
            let mut grow = new - *size;
            // Cancel retirements still due before adding slots.
            while grow > 0 {
                let due = self.deficit.load(Ordering::Acquire);
                if due == 0 {
                    break;
                }
                let take = due.min(grow);
                if self
                    .deficit
                    .compare_exchange(due, due - take, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    grow -= take;
                }
            }
            self.semaphore.add_permits(grow);
        } else if new < *size {
            let shrink = *size - new;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.deficit.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        *size = new;
    }

    /// The number of slots.
    pub fn size(&self) -> usize {
        *self.size.lock().expect("slots lock")
    }

    /// Gives a slot back when its handler is done (or retires it).
    fn release(&self, permit: OwnedSemaphorePermit) {
        let retired = self
            .deficit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if retired {
            permit.forget();
        }
    }
}

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

/// What happened to one delivery, before it is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The entry cannot be a message for this queue (malformed, over the
    /// queue's size bound); it was never handed to the plugin.
    Unusable { reason: String },
    /// Delivered more often than `max_attempts` with no outcome recorded
    /// (its handler kept dying with its host): not run again.
    Exhausted,
    /// The plugin ran; what it published, if it succeeded.
    Ran(Outcome, Vec<Published>),
}

/// How a delivery ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Ack {
        /// Failures were recorded for it, to be cleared with the ack.
        had_failures: bool,
        /// Follow-up messages to add to the ingress with the ack.
        published: Vec<Published>,
    },
    DeadLetter {
        reason: String,
        /// Attempts made (0: never handed to the plugin).
        attempts: u32,
        history: Option<FailureHistory>,
    },
    RetryLater {
        delay: Duration,
        /// The delay asked for, when it was longer than the queue's
        /// visibility timeout and so cut to it.
        cut_from: Option<Duration>,
        history: FailureHistory,
    },
}

/// Whether [`settlement`] needs the message's recorded failures for this
/// delivery: only a failure after an earlier one does.
pub fn needs_history(delivered: &Delivered, attempt: u32) -> bool {
    match delivered {
        Delivered::Unusable { .. } | Delivered::Ran(Outcome::Success, _) => false,
        Delivered::Exhausted => true,
        Delivered::Ran(..) => attempt > 1,
    }
}

/// Decides how a delivery ends: a pure function of what happened, the
/// attempt (1, 2, ...), the queue's policy, the failures recorded before
/// this attempt, and the time `now` (RFC 3339) for the record.
pub fn settlement(
    delivered: &Delivered,
    attempt: u32,
    policy: &QueueConfig,
    history: Option<&FailureHistory>,
    now: &str,
) -> Settlement {
    let (kind, reason, asked) = match delivered {
        Delivered::Unusable { reason } => {
            return Settlement::DeadLetter {
                reason: reason.clone(),
                attempts: 0,
                history: None,
            };
        }
        Delivered::Exhausted => {
            let last = history
                .and_then(|h| h.errors.last())
                .map_or("none recorded: the handler never finished", String::as_str);
            return Settlement::DeadLetter {
                reason: format!(
                    "gave up after {} deliveries (max_attempts {}); last error: {last}",
                    attempt - 1,
                    policy.max_attempts
                ),
                attempts: attempt - 1,
                history: history.cloned(),
            };
        }
        Delivered::Ran(Outcome::Success, published) => {
            return Settlement::Ack {
                had_failures: attempt > 1,
                published: published.clone(),
            };
        }
        Delivered::Ran(Outcome::Reject { reason }, _) => {
            return Settlement::DeadLetter {
                reason: format!("rejected by the plugin: {reason}"),
                attempts: attempt,
                history: history.cloned(),
            };
        }
        Delivered::Ran(Outcome::Retry { reason, delay }, _) => ("retry", reason, *delay),
        Delivered::Ran(Outcome::Failed { kind, reason }, _) => (kind.as_str(), reason, None),
    };
    let mut history = history.cloned().unwrap_or_default();
    history.record(attempt, kind, reason, now);
    if attempt >= policy.max_attempts {
        return Settlement::DeadLetter {
            reason: format!("gave up after {attempt} attempts; last error ({kind}): {reason}"),
            attempts: attempt,
            history: Some(history),
        };
    }
    let wanted = asked.unwrap_or_else(|| policy.backoff(attempt + 1));
    // A retry is scheduled through the message's idle clock: no delay can
    // be longer than the visibility timeout.
    let (delay, cut_from) = if wanted > policy.visibility_timeout {
        (policy.visibility_timeout, Some(wanted))
    } else {
        (wanted, None)
    };
    Settlement::RetryLater {
        delay,
        cut_from,
        history,
    }
}

/// What a queue's workers are made of.
#[derive(Debug)]
pub struct QueueParts {
    pub runtime: Arc<ArcSwap<QueueRuntime>>,
    pub slots: Arc<Slots>,
    pub engine: PluginEngine,
    pub stream: QueueStream,
    pub reader: BoundedReader,
    pub metrics: Arc<QueueMetrics>,
    pub health: Arc<Health>,
}

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
}

/// The workers of one queue in one host.
pub struct QueueWorker {
    shared: Arc<Shared>,
    /// Blocking reads of new messages, bounded by the queue's
    /// `max_entry_kib`: a connection of its own.
    reader: BoundedReader,
    acks: mpsc::UnboundedReceiver<AckRequest>,
}

/// Acks gathered into one XACK: as many as arrived while the last one was
/// under way, up to this many.
const MAX_ACK_BATCH: usize = 512;

/// One handled message waiting for its ack, and who to tell when it is done.
struct AckRequest {
    id: String,
    had_failures: bool,
    /// Published with the ack, in the same step.
    published: Vec<Published>,
    done: oneshot::Sender<StreamResult<()>>,
}

/// What every handler task of the queue needs.
struct Shared {
    name: String,
    runtime: Arc<ArcSwap<QueueRuntime>>,
    slots: Arc<Slots>,
    engine: PluginEngine,
    stream: QueueStream,
    metrics: Arc<QueueMetrics>,
    health: Arc<Health>,
    /// Entry ids being handled now, whose leases are renewed.
    in_flight: Mutex<HashSet<String>>,
    /// Held while leases are renewed, and taken before a retry is scheduled:
    /// a renewal in flight for a message whose handler just finished would
    /// otherwise reset the idle clock the retry sets.
    renewing: tokio::sync::Mutex<()>,
    /// The group was found missing and that was said; said again only once
    /// it has been back.
    group_reported: std::sync::atomic::AtomicBool,
    /// To the task that acks handled messages in batches.
    acks: mpsc::UnboundedSender<AckRequest>,
}

impl std::fmt::Debug for QueueWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueWorker")
            .field("queue", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl QueueWorker {
    pub fn new(parts: QueueParts) -> Self {
        let (ack_tx, acks) = mpsc::unbounded_channel();
        QueueWorker {
            acks,
            shared: Arc::new(Shared {
                name: parts.stream.queue.clone(),
                runtime: parts.runtime,
                slots: parts.slots,
                engine: parts.engine,
                stream: parts.stream,
                metrics: parts.metrics,
                health: parts.health,
                in_flight: Mutex::new(HashSet::new()),
                renewing: tokio::sync::Mutex::new(()),
                group_reported: std::sync::atomic::AtomicBool::new(false),
                acks: ack_tx,
            }),
            reader: parts.reader,
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
        let mut next_claim = tokio::time::Instant::now();
        let mut cursor = "0-0".to_string();
        let mut backoff = Backoff::default();
        loop {
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
            let queue = self.shared.runtime.load().queue.clone();
            // Abandoned messages and due retries are looked for this often;
            // new messages are waited for in between.
            let claim_interval = (queue.visibility_timeout / 4)
                .clamp(Duration::from_millis(50), Duration::from_millis(500));
            let batch = async {
                let now = tokio::time::Instant::now();
                if now >= next_claim {
                    let claimed = self
                        .shared
                        .stream
                        .claim_idle(
                            queue.visibility_timeout,
                            &cursor,
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
                    // The pending list is scanned a stretch at a time; a
                    // stretch with nothing due waits for the next round.
                    if claimed.cursor == "0-0" || claimed.entries.is_empty() {
                        next_claim = now + claim_interval;
                    }
                    cursor = claimed.cursor;
                    if !claimed.entries.is_empty() {
                        self.shared
                            .metrics
                            .reclaimed
                            .fetch_add(claimed.entries.len() as u64, Ordering::Relaxed);
                        return StreamResult::Ok(claimed.entries);
                    }
                }
                let block = next_claim
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(10));
                self.reader
                    .read_new(
                        &self.shared.stream.stream,
                        self.shared.stream.group(),
                        &self.shared.stream.consumer,
                        permits.len(),
                        block,
                        Bounds {
                            max_bytes: queue.max_entry_bytes,
                            // The router adds `type` and `id` to a copy
                            // when the producer left them out.
                            max_fields: MAX_FIELDS + 2,
                        },
                    )
                    .await
            };
            let batch: Vec<ReadEntry> = match batch.await {
                Ok(b) => {
                    backoff.reset();
                    self.shared.health.ok();
                    if self.shared.group_reported.swap(false, Ordering::Relaxed) {
                        tracing::info!(queue = %name, "The queue's consumer group is back; reading again.");
                    }
                    b
                }
                Err(e) => {
                    for permit in permits {
                        self.shared.slots.release(permit);
                    }
                    if e.kind == RedisFailure::MissingGroup {
                        self.shared.group_missing().await;
                    } else {
                        self.shared.health.failed(&e);
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff.delay()) => continue,
                    }
                }
            };
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
    /// Renews the lease of every message being handled, every third of the
    /// visibility timeout, so that no other consumer takes over a message a
    /// live host is still handling, however long its handler runs. Ends when
    /// `done` fires.
    async fn renew_leases(self: Arc<Self>, done: CancellationToken) {
        loop {
            let every = self.runtime.load().queue.visibility_timeout / 3;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = done.cancelled() => return,
            }
            let ids: Vec<String> = self
                .in_flight
                .lock()
                .expect("in-flight lock")
                .iter()
                .cloned()
                .collect();
            if ids.is_empty() {
                continue;
            }
            let _renewing = self.renewing.lock().await;
            match self.stream.renew_leases(&ids).await {
                Ok(_) => self.health.ok(),
                Err(e) => self.health.failed(&e),
            }
        }
    }

    /// The queue's consumer group is gone (Redis lost its data, or someone
    /// deleted it). Said loudly; recreated at the start of the stream, never
    /// at its end, only if the operator chose so.
    async fn group_missing(&self) {
        QueueMetrics::add(&self.metrics.group_missing);
        let policy = self.runtime.load().on_missing_group;
        if policy == MissingGroup::Stop && self.group_reported.swap(true, Ordering::Relaxed) {
            tracing::debug!(queue = %self.name, "The queue's consumer group is still missing.");
            return;
        }
        match policy {
            MissingGroup::Recreate => {
                tracing::error!(queue = %self.name, stream = %self.stream.stream, "The queue's consumer group is gone (did Redis lose its data?); recreating it at the start of the stream (host.on_missing_group = \"recreate\").");
                if let Err(e) = self.stream.recreate_group().await {
                    tracing::error!(queue = %self.name, error = %e, "Recreating the consumer group failed.");
                }
            }
            MissingGroup::Stop => {
                tracing::error!(queue = %self.name, stream = %self.stream.stream, "The queue's consumer group is gone (did Redis lose its data?); not reading until an operator recreates it (host.on_missing_group = \"stop\").");
            }
        }
    }

    /// Runs one delivery of one message and settles it. If Redis cannot be
    /// reached to settle it, settling is retried for a while (half the
    /// visibility timeout), so a short outage does not make a handled message
    /// run again; after that it stays pending and is delivered again.
    async fn handle(&self, entry: ReadEntry, slot: OwnedSemaphorePermit) {
        let rt = self.runtime.load_full();
        let id = entry.id().to_owned();
        let settled = self.run(&rt, entry).await;
        // The handler is done: its slot can take the next message while this
        // one is settled (settling waits on Redis, not on the plugin).
        self.slots.release(slot);
        // Done running: no more lease renewals (a renewal now would undo the
        // retry delay the settlement sets).
        self.in_flight.lock().expect("in-flight lock").remove(&id);
        let settlement = match settled {
            Ok(s) => s,
            Err(e) => {
                self.health.failed(&e);
                tracing::error!(queue = %self.name, entry_id = %id, error = %e, "Preparing a delivery failed; the message stays pending and will be delivered again.");
                return;
            }
        };
        let budget = rt.queue.visibility_timeout / 2;
        let started = std::time::Instant::now();
        let mut backoff = Backoff::default();
        loop {
            match self.settle(&rt, &id, &settlement).await {
                Ok(true) => {
                    self.health.ok();
                    return;
                }
                Ok(false) => {
                    self.health.ok();
                    tracing::warn!(queue = %self.name, entry_id = %id, "The message was taken over by another consumer before it was settled (this host was cut off from Redis for longer than the visibility timeout); it is left to that consumer.");
                    return;
                }
                Err(e) if e.is_outage() && started.elapsed() < budget => {
                    self.health.failed(&e);
                    tokio::time::sleep(backoff.delay()).await;
                }
                Err(e) => {
                    tracing::error!(queue = %self.name, entry_id = %id, error = %e, "Settling a message failed; it stays pending and will be delivered again.");
                    return;
                }
            }
        }
    }

    /// Runs the plugin if the message may be tried, and decides how the
    /// delivery ends.
    async fn run(&self, rt: &QueueRuntime, entry: ReadEntry) -> StreamResult<Settlement> {
        let q = &rt.queue;
        let attempt = entry.deliveries();
        let entry_id = entry.id().to_owned();
        let unusable = |reason: String| (Delivered::Unusable { reason }, None);
        let (delivered, message) = match entry {
            ReadEntry::TooLarge { bytes, .. } => unusable(too_large(q, bytes)),
            ReadEntry::Whole { entry, .. } if entry_bytes(&entry.fields) > q.max_entry_bytes => {
                unusable(too_large(q, entry_bytes(&entry.fields) as u64))
            }
            ReadEntry::Whole { entry, .. } => match Message::parse(&entry.id, &entry.fields) {
                Err(e) => unusable(e.to_string()),
                Ok(m) if attempt > q.max_attempts => (Delivered::Exhausted, Some(m)),
                Ok(m) if hops(&m) > q.max_hops => (
                    Delivered::Unusable {
                        reason: format!(
                            "published {} times in a chain, more than queues.{}.max_hops ({}): messages publishing each other in a loop?",
                            hops(&m),
                            q.name,
                            q.max_hops
                        ),
                    },
                    Some(m),
                ),
                Ok(m) => {
                    let result = self.call(rt, &m, attempt).await;
                    (Delivered::Ran(result.outcome, result.published), Some(m))
                }
            },
        };
        let history = if needs_history(&delivered, attempt) {
            self.stream.failures(&entry_id).await?
        } else {
            None
        };
        let settlement = settlement(&delivered, attempt, q, history.as_ref(), &now_rfc3339());
        self.record(
            rt,
            &entry_id,
            message.as_ref(),
            attempt,
            &delivered,
            &settlement,
        );
        Ok(settlement)
    }

    async fn call(
        &self,
        rt: &QueueRuntime,
        m: &Message,
        attempt: u32,
    ) -> crate::plugin::CallResult {
        // One span per handling, in the producer's trace.
        let producers = m
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            .map(|(_, v)| v.as_str())
            .filter(|v| crate::telemetry::valid_traceparent(v));
        let span = tracing::info_span!(
            "handle",
            otel.name = %format!("handle {}", rt.queue.name),
            queue = %rt.queue.name,
                        msg_id = %crate::text::bounded(&m.id, crate::telemetry::MAX_ATTRIBUTE),
            msg_type = %crate::text::bounded(&m.message_type, crate::telemetry::MAX_ATTRIBUTE),
            attempt,
            plugin = %rt.plugin.hash,
            outcome = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, producers);
        let trace =
            crate::telemetry::traceparent_of(&span).or_else(|| producers.map(str::to_owned));
        let delivery = Delivery {
            id: m.id.clone(),
            message_type: m.message_type.clone(),
            queue: rt.queue.name.clone(),
            body: m.body.clone(),
            headers: m.headers.clone(),
            attempt,
            trace,
        };
        QueueMetrics::add(&self.metrics.attempts);
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = self
            .engine
            .call(rt.plugin.clone(), rt.cx.clone(), delivery, rt.warm.clone())
            .instrument(span.clone())
            .await;
        span.record("outcome", result.outcome.kind());
        self.metrics.duration.observe(started.elapsed());
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Logs a decided delivery and counts it.
    fn record(
        &self,
        rt: &QueueRuntime,
        entry_id: &str,
        message: Option<&Message>,
        attempt: u32,
        delivered: &Delivered,
        settlement: &Settlement,
    ) {
        let q = &rt.queue.name;
        let plugin = rt.plugin.hash.as_str();
        let (msg_id, msg_type) = message.map_or((entry_id, ""), |m| (&m.id, &m.message_type));
        let m = &self.metrics;
        match delivered {
            Delivered::Ran(Outcome::Success, _) => QueueMetrics::add(&m.succeeded),
            Delivered::Ran(Outcome::Reject { .. }, _) => QueueMetrics::add(&m.rejected),
            Delivered::Ran(Outcome::Retry { .. }, _) => QueueMetrics::add(&m.retried),
            Delivered::Ran(Outcome::Failed { kind, .. }, _) => {
                QueueMetrics::add(&m.failed);
                QueueMetrics::add(&m.failed_by_kind[*kind as usize]);
            }
            Delivered::Unusable { .. } | Delivered::Exhausted => {}
        }
        let outcome = match delivered {
            Delivered::Ran(o, _) => o.kind(),
            Delivered::Unusable { .. } => "unusable",
            Delivered::Exhausted => "exhausted",
        };
        match settlement {
            Settlement::Ack { .. } => {
                m.settled_by(plugin);
                tracing::info!(queue = %q, msg_id = %msg_id, msg_type = %msg_type, attempt, plugin = %plugin, outcome, "Message handled.");
            }
            Settlement::DeadLetter { reason, .. } => {
                QueueMetrics::add(&m.dead_lettered);
                if !matches!(delivered, Delivered::Unusable { .. }) {
                    m.settled_by(plugin);
                }
                tracing::warn!(queue = %q, msg_id = %msg_id, msg_type = %msg_type, attempt, plugin = %plugin, outcome, reason = %reason, "Message dead-lettered.");
            }
            Settlement::RetryLater {
                delay,
                cut_from,
                history,
            } => {
                let reason = history.errors.last().map_or("", String::as_str);
                tracing::warn!(queue = %q, msg_id = %msg_id, msg_type = %msg_type, attempt, plugin = %plugin, outcome, reason = %reason, retry_in_ms = delay.as_millis() as u64, "Attempt failed; will retry.");
                if let Some(wanted) = cut_from {
                    tracing::warn!(queue = %q, msg_id = %msg_id, wanted_ms = wanted.as_millis() as u64, "A retry delay longer than the queue's visibility_timeout was cut to it.");
                }
            }
        }
    }

    /// Writes a settlement to Redis, in one atomic step. Returns false when
    /// the message was no longer this consumer's, and nothing was written.
    async fn settle(
        &self,
        rt: &QueueRuntime,
        id: &str,
        settlement: &Settlement,
    ) -> StreamResult<bool> {
        match settlement {
            Settlement::Ack {
                had_failures,
                published,
            } => {
                let (done, result) = oneshot::channel();
                let stopped = || StreamError::protocol("acking", "the ack task has stopped");
                self.acks
                    .send(AckRequest {
                        id: id.to_owned(),
                        had_failures: *had_failures,
                        published: published.clone(),
                        done,
                    })
                    .map_err(|_| stopped())?;
                result.await.map_err(|_| stopped())??;
                Ok(true)
            }
            Settlement::DeadLetter {
                reason,
                attempts,
                history,
            } => {
                let plugin = if *attempts == 0 {
                    ""
                } else {
                    rt.plugin.hash.as_str()
                };
                self.stream
                    .dead_letter(id, reason, *attempts, plugin, history.as_ref())
                    .await
                    .map(|dead| dead.is_some())
            }
            Settlement::RetryLater { delay, history, .. } => {
                let _no_renewal = self.renewing.lock().await;
                self.stream
                    .retry_later(id, rt.queue.visibility_timeout, *delay, history)
                    .await
            }
        }
    }
}

/// How many publications led to a message.
fn hops(m: &Message) -> u32 {
    m.headers
        .iter()
        .find(|(k, _)| k == crate::plugin::HOPS_HEADER)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn too_large(q: &QueueConfig, bytes: u64) -> String {
    format!(
        "entry is {}, more than queues.{}.max_entry_kib ({} KiB)",
        human_size(bytes),
        q.name,
        q.max_entry_bytes / 1024
    )
}

/// Acks handled messages in batches: each XACK takes every ack that arrived
/// while the previous one was under way. Under load that is one round trip
/// for many messages; when idle, an ack goes out at once. What the calls
/// published goes out in the same step as their acks. Runs until every
/// sender is gone.
async fn ack_batches(
    stream: QueueStream,
    metrics: Arc<QueueMetrics>,
    mut requests: mpsc::UnboundedReceiver<AckRequest>,
) {
    let mut batch = Vec::with_capacity(MAX_ACK_BATCH);
    let mut ids = Vec::with_capacity(MAX_ACK_BATCH);
    let mut published = Vec::new();
    let mut waiting = Vec::with_capacity(MAX_ACK_BATCH);
    while requests.recv_many(&mut batch, MAX_ACK_BATCH).await > 0 {
        for request in batch.drain(..) {
            ids.push((request.id, request.had_failures));
            published.extend(request.published);
            waiting.push(request.done);
        }
        // A crash here: handled, not acknowledged, nothing published.
        crate::failpoint::hit("queue-before-ack");
        let result = stream.ack(&ids, &published).await;
        if result.is_ok() {
            metrics
                .published
                .fetch_add(published.len() as u64, Ordering::Relaxed);
        }
        ids.clear();
        published.clear();
        for done in waiting.drain(..) {
            // The handler may have given up waiting (shutdown); nothing to do.
            let _ = done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::FailureKind as Kind;

    fn policy() -> QueueConfig {
        QueueConfig {
            name: "Q".into(),
            plugin: "p.wasm".into(),
            concurrency: 1,
            concurrency_min: 1,
            handler_timeout: Duration::from_secs(1),
            memory_mib: 64,
            max_entry_bytes: 1024,
            visibility_timeout: Duration::from_secs(60),
            max_attempts: 3,
            retry_quick: 1,
            retry_quick_delay: Duration::from_millis(100),
            retry_delay: Duration::from_secs(30),
            retry_delay_max: Duration::from_secs(600),
            reuse_instances: false,
            plugin_config: Default::default(),
            secrets: Vec::new(),
            http: Default::default(),
            keyvalue: None,
            publish: Default::default(),
            max_hops: 8,
            sql: None,
            mail: None,
        }
    }

    /// A follow-up message a call published: it goes out with a success
    /// only (the other settlements in the table drop it).
    fn published() -> Published {
        Published {
            id: "m/1".into(),
            message_type: "next".into(),
            body: "{}".into(),
            headers: vec![],
        }
    }

    fn history(errors: &[&str]) -> FailureHistory {
        FailureHistory {
            first: "T0".into(),
            last: "T1".into(),
            errors: errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn retry(reason: &str, delay_ms: Option<u64>) -> Delivered {
        Delivered::Ran(
            Outcome::Retry {
                reason: reason.into(),
                delay: delay_ms.map(Duration::from_millis),
            },
            vec![published()],
        )
    }

    #[test]
    fn settlement_table() {
        let p = policy();
        let trap = Delivered::Ran(
            Outcome::Failed {
                kind: Kind::Trap,
                reason: "boom".into(),
            },
            vec![published()],
        );
        let before = history(&["attempt 1 (retry): down"]);
        // (what happened, attempt, failures before, settlement)
        let cases: Vec<(Delivered, u32, Option<FailureHistory>, Settlement)> = vec![
            (
                Delivered::Ran(Outcome::Success, vec![published()]),
                1,
                None,
                Settlement::Ack {
                    had_failures: false,
                    published: vec![published()],
                },
            ),
            (
                Delivered::Ran(Outcome::Success, vec![]),
                2,
                Some(before.clone()),
                Settlement::Ack {
                    had_failures: true,
                    published: vec![],
                },
            ),
            (
                Delivered::Unusable {
                    reason: "missing field `body`".into(),
                },
                1,
                None,
                Settlement::DeadLetter {
                    reason: "missing field `body`".into(),
                    attempts: 0,
                    history: None,
                },
            ),
            (
                Delivered::Ran(
                    Outcome::Reject {
                        reason: "bad site".into(),
                    },
                    vec![published()],
                ),
                2,
                Some(before.clone()),
                Settlement::DeadLetter {
                    reason: "rejected by the plugin: bad site".into(),
                    attempts: 2,
                    history: Some(before.clone()),
                },
            ),
            // The first failure: the quick retry.
            (
                retry("down", None),
                1,
                None,
                Settlement::RetryLater {
                    delay: Duration::from_millis(100),
                    cut_from: None,
                    history: FailureHistory {
                        first: "NOW".into(),
                        last: "NOW".into(),
                        errors: vec!["attempt 1 (retry): down".into()],
                    },
                },
            ),
            // The second: the spaced retry, after the quick ones.
            (
                trap.clone(),
                2,
                Some(before.clone()),
                Settlement::RetryLater {
                    delay: Duration::from_secs(30),
                    cut_from: None,
                    history: FailureHistory {
                        first: "T0".into(),
                        last: "NOW".into(),
                        errors: vec![
                            "attempt 1 (retry): down".into(),
                            "attempt 2 (trap): boom".into(),
                        ],
                    },
                },
            ),
            // The plugin's own delay wins, but never past the visibility
            // timeout.
            (
                retry("slow down", Some(120_000)),
                1,
                None,
                Settlement::RetryLater {
                    delay: Duration::from_secs(60),
                    cut_from: Some(Duration::from_secs(120)),
                    history: FailureHistory {
                        first: "NOW".into(),
                        last: "NOW".into(),
                        errors: vec!["attempt 1 (retry): slow down".into()],
                    },
                },
            ),
            // The last attempt fails: dead-lettered with every error.
            (
                trap,
                3,
                Some(before.clone()),
                Settlement::DeadLetter {
                    reason: "gave up after 3 attempts; last error (trap): boom".into(),
                    attempts: 3,
                    history: Some(FailureHistory {
                        first: "T0".into(),
                        last: "NOW".into(),
                        errors: vec![
                            "attempt 1 (retry): down".into(),
                            "attempt 3 (trap): boom".into(),
                        ],
                    }),
                },
            ),
            // Delivered past max_attempts without an outcome.
            (
                Delivered::Exhausted,
                4,
                None,
                Settlement::DeadLetter {
                    reason: "gave up after 3 deliveries (max_attempts 3); last error: none recorded: the handler never finished".into(),
                    attempts: 3,
                    history: None,
                },
            ),
            (
                Delivered::Exhausted,
                5,
                Some(before.clone()),
                Settlement::DeadLetter {
                    reason: "gave up after 4 deliveries (max_attempts 3); last error: attempt 1 (retry): down".into(),
                    attempts: 4,
                    history: Some(before),
                },
            ),
        ];
        for (delivered, attempt, history, want) in cases {
            let got = settlement(&delivered, attempt, &p, history.as_ref(), "NOW");
            assert_eq!(got, want, "{delivered:?} on attempt {attempt}");
        }
    }

    #[test]
    fn history_is_read_only_for_a_failure_after_another() {
        let fail = retry("x", None);
        assert!(!needs_history(&fail, 1));
        assert!(needs_history(&fail, 2));
        assert!(!needs_history(&Delivered::Ran(Outcome::Success, vec![]), 5));
        assert!(needs_history(&Delivered::Exhausted, 9));
        assert!(!needs_history(
            &Delivered::Unusable { reason: "x".into() },
            3
        ));
    }
}
