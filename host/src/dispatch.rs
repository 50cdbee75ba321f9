//! Queue workers: read a queue's messages within its concurrency, run the
//! plugin on each in a fresh instance, and settle the outcome: ack, retry
//! later, or dead-letter.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::metrics::QueueMetrics;
use crate::config::{MissingGroup, QueueConfig};
use crate::message::Message;
use crate::plugin::{CallContext, LoadedPlugin, Outcome, PluginEngine, WarmPool, WitMessage};
use crate::redis_conn::{Backoff, Health, Reader, SharedFailure, is_missing_group, is_outage};
use crate::stream::Entry;
use crate::stream::queue::{FailureHistory, QueueStream};

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
}

impl QueueRuntime {
    pub fn new(queue: QueueConfig, plugin: Arc<LoadedPlugin>) -> Self {
        let cx = CallContext {
            queue: queue.name.as_str().into(),
            timeout: queue.handler_timeout,
            memory_bytes: queue.memory_mib as usize * 1024 * 1024,
            config: Arc::new(queue.plugin_config.clone()),
        };
        QueueRuntime {
            warm: queue.reuse_instances.then(|| Arc::new(WarmPool::default())),
            queue: Arc::new(queue),
            plugin,
            cx,
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

/// What a queue's workers are made of.
#[derive(Debug)]
pub struct QueueParts {
    pub runtime: Arc<ArcSwap<QueueRuntime>>,
    pub slots: Arc<Slots>,
    pub engine: PluginEngine,
    pub stream: QueueStream,
    pub reader: Reader,
    pub metrics: Arc<QueueMetrics>,
    pub health: Arc<Health>,
    pub on_missing_group: MissingGroup,
}

/// The workers of one queue in one host.
pub struct QueueWorker {
    shared: Arc<Shared>,
    reader: Reader,
    acks: mpsc::UnboundedReceiver<AckRequest>,
}

/// Acks gathered into one XACK: as many as arrived while the last one was
/// under way, up to this many.
const MAX_ACK_BATCH: usize = 512;

/// One handled message waiting for its ack, and who to tell when it is done.
struct AckRequest {
    id: String,
    had_failures: bool,
    done: oneshot::Sender<Result<(), SharedFailure>>,
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
    /// What to do if the queue's consumer group vanishes.
    on_missing_group: MissingGroup,
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
                on_missing_group: parts.on_missing_group,
                acks: ack_tx,
            }),
            reader: parts.reader,
        }
    }

    /// Reads and dispatches until `cancel` fires. Handler calls run as tasks
    /// on `tracker`, so shutdown can wait for them. A message is read only
    /// when a handler slot is free for it: nothing waits in a local buffer
    /// while its visibility timeout runs.
    pub async fn run(mut self, cancel: CancellationToken, tracker: TaskTracker) {
        let name = self.shared.name.clone();
        let semaphore = self.shared.slots.semaphore.clone();
        // Leases are renewed while handlers run, including after this loop
        // stops reading (shutdown, or the queue removed) until the last one
        // is done; so the task is tracked with the handlers.
        tracker.spawn(self.shared.clone().renew_leases(cancel.clone()));
        // Ends when the last handler is done with the queue's shared state.
        tracker.spawn(ack_batches(self.shared.stream.clone(), self.acks));
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
                        .claim_idle(queue.visibility_timeout, &cursor, permits.len())
                        .await?;
                    for id in &claimed.deleted {
                        tracing::error!(queue = %queue.name, entry_id = %id, "A pending message's entry was deleted from the stream before it was handled.");
                    }
                    if claimed.cursor == "0-0" {
                        next_claim = now + claim_interval;
                    }
                    cursor = claimed.cursor;
                    if !claimed.entries.is_empty() {
                        self.shared
                            .metrics
                            .reclaimed
                            .fetch_add(claimed.entries.len() as u64, Ordering::Relaxed);
                        return anyhow::Ok(claimed.entries);
                    }
                }
                let block = next_claim
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(10));
                let conn = self.reader.get().await?;
                let read = self
                    .shared
                    .stream
                    .read_new(conn, permits.len(), block)
                    .await;
                if read.is_err() {
                    self.reader.reset();
                }
                Ok(read?.into_iter().map(|e| (e, 1)).collect())
            };
            let batch: Vec<(Entry, u32)> = match batch.await {
                Ok(b) => {
                    backoff.reset();
                    self.shared.health.ok();
                    b
                }
                Err(e) => {
                    self.shared
                        .health
                        .failed(&format!("Reading queue {name}"), &e);
                    drop(permits);
                    if is_missing_group(&e) {
                        self.shared.group_missing().await;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff.delay()) => continue,
                    }
                }
            };
            for ((entry, attempt), permit) in batch.into_iter().zip(permits) {
                let shared = self.shared.clone();
                shared
                    .in_flight
                    .lock()
                    .expect("in-flight lock")
                    .insert(entry.id.clone());
                tracker.spawn(async move {
                    shared.handle(entry, attempt, permit).await;
                });
            }
        }
        tracing::info!(queue = %name, "Queue worker stopped reading.");
    }
}

/// How a delivery ends, decided before it is written to Redis.
enum Settlement {
    Ack {
        had_failures: bool,
    },
    DeadLetter {
        reason: String,
        attempts: u32,
        history: Option<FailureHistory>,
    },
    RetryLater {
        delay: Duration,
        history: FailureHistory,
    },
}

impl Shared {
    /// Renews the lease of every message being handled, every third of the
    /// visibility timeout, so that no other consumer takes over a message a
    /// live host is still handling, however long its handler runs. Ends once
    /// `stop` has fired and no handler is left.
    async fn renew_leases(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let every = self.runtime.load().queue.visibility_timeout / 3;
            if stop.is_cancelled() {
                tokio::time::sleep(every).await;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => {}
                }
            }
            let ids: Vec<String> = self
                .in_flight
                .lock()
                .expect("in-flight lock")
                .iter()
                .cloned()
                .collect();
            if ids.is_empty() {
                if stop.is_cancelled() {
                    return;
                }
                continue;
            }
            match self.stream.renew_leases(&ids).await {
                Ok(_) => self.health.ok(),
                Err(e) => self.health.failed("Renewing leases", &e),
            }
        }
    }

    /// The queue's consumer group is gone (Redis lost its data, or someone
    /// deleted it). Said loudly; recreated at the start of the stream, never
    /// at its end, only if the operator chose so.
    async fn group_missing(&self) {
        match self.on_missing_group {
            MissingGroup::Recreate => {
                tracing::error!(queue = %self.name, stream = %self.stream.stream, "The queue's consumer group is gone (did Redis lose its data?); recreating it at the start of the stream (host.on_missing_group = \"recreate\").");
                if let Err(e) = self.stream.recreate_group().await {
                    tracing::error!(queue = %self.name, error = %format!("{e:#}"), "Recreating the consumer group failed.");
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
    async fn handle(&self, entry: Entry, attempt: u32, slot: OwnedSemaphorePermit) {
        let rt = self.runtime.load_full();
        let settlement = self.attempt(&rt, &entry, attempt).await;
        // The handler is done: its slot can take the next message while this
        // one is settled (settling waits on Redis, not on the plugin).
        self.slots.release(slot);
        // Done running: no more lease renewals (a renewal now would undo the
        // retry delay the settlement sets).
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&entry.id);
        let settlement = match settlement {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(queue = %self.name, entry_id = %entry.id, error = %format!("{e:#}"), "Preparing a delivery failed; the message stays pending and will be delivered again.");
                return;
            }
        };
        let budget = rt.queue.visibility_timeout / 2;
        let started = std::time::Instant::now();
        let mut backoff = Backoff::default();
        loop {
            match self.settle(&rt, &entry, &settlement).await {
                Ok(()) => {
                    self.health.ok();
                    return;
                }
                Err(e) if is_outage(&e) && started.elapsed() < budget => {
                    self.health.failed("Settling a message", &e);
                    tokio::time::sleep(backoff.delay()).await;
                }
                Err(e) => {
                    tracing::error!(queue = %self.name, entry_id = %entry.id, error = %format!("{e:#}"), "Settling a message failed; it stays pending and will be delivered again.");
                    return;
                }
            }
        }
    }

    /// Runs the plugin if the message may still be tried, and decides the
    /// settlement.
    async fn attempt(&self, rt: &QueueRuntime, entry: &Entry, attempt: u32) -> Result<Settlement> {
        let q = &rt.queue;
        let plugin = &rt.plugin.hash;
        let message = match Message::parse(&entry.id, &entry.fields) {
            Ok(m) => m,
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(queue = %q.name, entry_id = %entry.id, reason = %reason, "Malformed queue entry dead-lettered.");
                QueueMetrics::add(&self.metrics.dead_lettered);
                return Ok(Settlement::DeadLetter {
                    reason,
                    attempts: 0,
                    history: None,
                });
            }
        };
        let (msg_id, msg_type) = (message.id.clone(), message.message_type.clone());
        if attempt > q.max_attempts {
            // Delivered more often than allowed without a recorded outcome:
            // its handler kept dying with its host (or hanging). Never run it
            // again.
            let history = self.stream.failures(&entry.id).await?;
            let reason = format!(
                "gave up after {} deliveries (max_attempts {}); last error: {}",
                attempt - 1,
                q.max_attempts,
                history
                    .as_ref()
                    .and_then(|h| h.errors.last())
                    .map_or("none recorded: the handler never finished", String::as_str)
            );
            tracing::warn!(queue = %q.name, msg_id = %msg_id, msg_type = %msg_type, attempt, reason = %reason, "Message dead-lettered.");
            QueueMetrics::add(&self.metrics.dead_lettered);
            self.metrics.settled_by(plugin);
            return Ok(Settlement::DeadLetter {
                reason,
                attempts: attempt - 1,
                history,
            });
        }

        let wit = WitMessage {
            id: message.id,
            message_type: message.message_type,
            queue: q.name.clone(),
            body: message.body,
            headers: message.headers,
            attempt,
        };
        QueueMetrics::add(&self.metrics.attempts);
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let outcome = self
            .engine
            .call(rt.plugin.clone(), rt.cx.clone(), wit, rt.warm.clone())
            .await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);

        let (kind, reason, delay) = match outcome {
            Outcome::Success => {
                QueueMetrics::add(&self.metrics.succeeded);
                self.metrics.settled_by(plugin);
                tracing::info!(queue = %q.name, msg_id = %msg_id, msg_type = %msg_type, attempt, plugin = %plugin, elapsed_ms, outcome = "success", "Message handled.");
                return Ok(Settlement::Ack {
                    had_failures: attempt > 1,
                });
            }
            Outcome::Reject { reason } => {
                let reason = format!("rejected by the plugin: {reason}");
                QueueMetrics::add(&self.metrics.rejected);
                QueueMetrics::add(&self.metrics.dead_lettered);
                self.metrics.settled_by(plugin);
                tracing::warn!(queue = %q.name, msg_id = %msg_id, msg_type = %msg_type, attempt, plugin = %plugin, outcome = "reject", reason = %reason, "Message dead-lettered.");
                let history = if attempt > 1 {
                    self.stream.failures(&entry.id).await?
                } else {
                    None
                };
                return Ok(Settlement::DeadLetter {
                    reason,
                    attempts: attempt,
                    history,
                });
            }
            Outcome::Retry { reason, delay } => {
                QueueMetrics::add(&self.metrics.retried);
                ("retry", reason, delay)
            }
            Outcome::Failed { kind, reason } => {
                QueueMetrics::add(&self.metrics.failed);
                (kind.as_str(), reason, None)
            }
        };

        let mut history = if attempt > 1 {
            self.stream.failures(&entry.id).await?.unwrap_or_default()
        } else {
            FailureHistory::default()
        };
        history.record(attempt, kind, &reason);
        if attempt >= q.max_attempts {
            let reason = format!("gave up after {attempt} attempts; last error ({kind}): {reason}");
            QueueMetrics::add(&self.metrics.dead_lettered);
            self.metrics.settled_by(plugin);
            tracing::warn!(queue = %q.name, msg_id = %msg_id, msg_type = %msg_type, attempt, plugin = %plugin, outcome = kind, reason = %reason, "Message dead-lettered.");
            return Ok(Settlement::DeadLetter {
                reason,
                attempts: attempt,
                history: Some(history),
            });
        }
        let delay = delay.unwrap_or_else(|| q.backoff(attempt + 1));
        tracing::warn!(queue = %q.name, msg_id = %msg_id, msg_type = %msg_type, attempt, plugin = %plugin, outcome = kind, reason = %reason, retry_in_ms = delay.as_millis() as u64, "Attempt failed; will retry.");
        Ok(Settlement::RetryLater { delay, history })
    }

    /// Writes a settlement to Redis, in one atomic step.
    async fn settle(
        &self,
        rt: &QueueRuntime,
        entry: &Entry,
        settlement: &Settlement,
    ) -> Result<()> {
        match settlement {
            Settlement::Ack { had_failures } => {
                let (done, result) = oneshot::channel();
                self.acks
                    .send(AckRequest {
                        id: entry.id.clone(),
                        had_failures: *had_failures,
                        done,
                    })
                    .map_err(|_| anyhow::anyhow!("the ack task has stopped"))?;
                Ok(result
                    .await
                    .map_err(|_| anyhow::anyhow!("the ack task has stopped"))??)
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
                    .dead_letter(entry, reason, *attempts, plugin, history.as_ref())
                    .await
                    .map(drop)
            }
            Settlement::RetryLater { delay, history } => {
                self.stream
                    .retry_later(&entry.id, rt.queue.visibility_timeout, *delay, history)
                    .await
            }
        }
    }
}

/// Acks handled messages in batches: each XACK takes every ack that arrived
/// while the previous one was under way. Under load that is one round trip
/// for many messages; when idle, an ack goes out at once. Runs until every
/// sender is gone.
async fn ack_batches(stream: QueueStream, mut requests: mpsc::UnboundedReceiver<AckRequest>) {
    let mut batch = Vec::with_capacity(MAX_ACK_BATCH);
    let mut ids = Vec::with_capacity(MAX_ACK_BATCH);
    let mut waiting = Vec::with_capacity(MAX_ACK_BATCH);
    while requests.recv_many(&mut batch, MAX_ACK_BATCH).await > 0 {
        for request in batch.drain(..) {
            ids.push((request.id, request.had_failures));
            waiting.push(request.done);
        }
        let result = stream.ack(&ids).await.map_err(|e| SharedFailure::new(&e));
        ids.clear();
        for done in waiting.drain(..) {
            // The handler may have given up waiting (shutdown); nothing to do.
            let _ = done.send(result.clone());
        }
    }
}
