//! The running host's parts, starting the routers and the queues of each
//! partition read, the maintenance task, and draining on shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, PluginRef, QueueConfig};
use crate::queue::{QueueContext, QueueRuntime, QueueWorker, Slots, WorkerTasks};
use crate::redis::bounded::BoundedReader;
use crate::router::Router;
use crate::stream::ingress::IngressRouter;
use crate::stream::{Partition, ensure_group};

use super::*;

/// The running host's parts, and what it is running now.
pub(super) struct Supervisor {
    /// What every queue is built from, the running configuration in it.
    pub(super) host: QueueContext,
    pub(super) router: Arc<ArcSwap<Router>>,
    /// The plugins in use, by file.
    pub(super) plugins: Plugins,
    pub(super) queues: BTreeMap<String, QueueHandle>,
    /// The partitions read now, each with what stops its router.
    pub(super) partitions: BTreeMap<Partition, CancellationToken>,
    /// The count of partitions last recorded in Redis.
    pub(super) registered: Option<usize>,
    /// Stops every reading loop (and the maintenance task) at shutdown.
    pub(super) readers: CancellationToken,
    /// The routers' and the queues' reading loops, and maintenance.
    pub(super) loops: TaskTracker,
    /// The tasks of removed queues and partitions, winding down; dropped
    /// once done.
    pub(super) retired: Vec<WorkerTasks>,
    /// Cranelift compiles of the plugins running on Winch's code, by file.
    pub(super) optimizing: BTreeMap<PluginRef, optimize::Optimizing>,
    /// Where they send their result.
    pub(super) optimized: tokio::sync::mpsc::UnboundedSender<optimize::Optimized>,
    /// Taken by each of them while it compiles: one at a time.
    pub(super) compile_turn: Arc<tokio::sync::Semaphore>,
}

/// A running queue.
pub(super) struct QueueHandle {
    pub(super) runtime: Arc<ArcSwap<QueueRuntime>>,
    pub(super) slots: Arc<Slots>,
    /// Stops this queue's reading loops and its scaler (the queue was
    /// removed).
    pub(super) stop: CancellationToken,
    /// Its reading loop in each partition read, sharing its slots.
    pub(super) workers: BTreeMap<Partition, PartitionWorker>,
}

/// Stops a reading loop: its handlers finish, then its acks and lease
/// renewals; its tasks are kept in `retired` until they are done.
pub(super) fn retire(retired: &mut Vec<WorkerTasks>, worker: PartitionWorker) {
    worker.stop.cancel();
    let tasks = worker.tasks.clone();
    tokio::spawn(async move { tasks.wind_down().await });
    retired.retain(|t| !t.is_done());
    retired.push(worker.tasks);
}

/// A queue's reading loop in one partition, and its handlers.
pub(super) struct PartitionWorker {
    pub(super) stop: CancellationToken,
    pub(super) tasks: WorkerTasks,
}

impl Supervisor {
    /// The configuration running now.
    pub(super) fn config(&self) -> Arc<Config> {
        self.host.settings.load_full()
    }

    /// Every handler task set: running queues' and retired ones'.
    pub(super) fn all_tasks(&self) -> Vec<&WorkerTasks> {
        self.queues
            .values()
            .flat_map(|q| q.workers.values().map(|w| &w.tasks))
            .chain(&self.retired)
            .collect()
    }

    /// Starts reading `partition`: its groups, its router, and a loop for
    /// each queue.
    pub(super) async fn read_partition(&mut self, partition: &Partition) -> Result<()> {
        if self.partitions.contains_key(partition) {
            return Ok(());
        }
        let h = &self.host;
        let mut conn = h.conn.clone();
        ensure_group(&mut conn, &partition.ingress, h.keys.group()).await?;
        for name in self.queues.keys() {
            ensure_group(&mut conn, &partition.queue_stream(name), h.keys.group()).await?;
        }
        let stop = self.readers.child_token();
        let router = IngressRouter {
            partition: partition.clone(),
            replicas: h.replicas.clone(),
            conn: h.conn.clone(),
            reader: BoundedReader::new(&h.redis),
            keys: h.keys.clone(),
            consumer: h.consumer.clone(),
            router: self.router.clone(),
            metrics: h.metrics.clone(),
            health: h.health.clone(),
            settings: h.settings.clone(),
            group_reported: false,
        };
        self.loops.spawn(router.run(stop.clone()));
        self.partitions.insert(partition.clone(), stop);
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for name in names {
            self.start_worker(&name, partition);
        }
        tracing::info!(partition = %partition.id(), ingress = %partition.ingress, "Reading partition.");
        Ok(())
    }

    /// Stops reading `partition` (it is drained): its router and its
    /// queues' loops stop; their handlers finish.
    pub(super) fn release_partition(&mut self, partition: &Partition) {
        if let Some(stop) = self.partitions.remove(partition) {
            stop.cancel();
        }
        for q in self.queues.values_mut() {
            if let Some(w) = q.workers.remove(partition) {
                retire(&mut self.retired, w);
            }
        }
        tracing::info!(partition = %partition.id(), ingress = %partition.ingress, "Stopped reading partition.");
    }

    /// Starts queue `name`'s loop in `partition`.
    fn start_worker(&mut self, name: &str, partition: &Partition) {
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        if q.workers.contains_key(partition) {
            return;
        }
        let stop = q.stop.child_token();
        let tasks = WorkerTasks::default();
        let worker = QueueWorker::new(
            name,
            q.runtime.clone(),
            q.slots.clone(),
            &self.host,
            partition,
        );
        self.loops.spawn(worker.run(stop.clone(), tasks.clone()));
        q.workers
            .insert(partition.clone(), PartitionWorker { stop, tasks });
    }

    /// Keeps the streams bounded and the groups free of dead consumers (see
    /// [`crate::stream::retention`]), and the cached code of the running
    /// plugins renewed, every `retention.interval`, on a task of its own.
    pub(super) fn start_maintenance(&self) {
        let h = &self.host;
        let (current, keys, consumer) = (h.settings.clone(), h.keys.clone(), h.consumer.clone());
        let (mut conn, health, stop) = (h.conn.clone(), h.health.clone(), self.readers.clone());
        let (metrics, engine) = (h.metrics.clone(), h.engine.clone());
        self.loops.spawn(async move {
            loop {
                let interval = current.load().retention.interval;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let config = current.load_full();
                let trimmed = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = super::maintain::maintain(&mut conn, &config, &keys, &consumer) => r,
                };
                match trimmed {
                    Ok(()) => {
                        health.ok();
                        crate::events::retention_round(&metrics);
                    }
                    Err(e) => health.failed(&e),
                }
                engine.renew_cached().await;
            }
        });
    }

    pub(super) async fn start_queue(&mut self, queue: QueueConfig) -> Result<()> {
        let h = &self.host;
        let mut conn = h.conn.clone();
        for p in self.partitions.keys() {
            ensure_group(&mut conn, &p.queue_stream(&queue.name), h.keys.group()).await?;
        }
        let name = queue.name.clone();
        let plugin = self.plugins[&queue.plugin].clone();
        let slots = Arc::new(Slots::new(queue.concurrency_min as usize));
        h.metrics
            .queue(&name)
            .concurrency
            .store(queue.concurrency_min as u64, Ordering::Relaxed);
        let runtime = Arc::new(ArcSwap::from_pointee(QueueRuntime::build(queue, plugin, h)));
        let stop = self.readers.child_token();
        self.loops.spawn(crate::queue::scale(
            runtime.clone(),
            slots.clone(),
            h.metrics.queue(&name),
            stop.clone(),
        ));
        self.queues.insert(
            name.clone(),
            QueueHandle {
                runtime,
                slots,
                stop,
                workers: BTreeMap::new(),
            },
        );
        let partitions: Vec<Partition> = self.partitions.keys().cloned().collect();
        for p in &partitions {
            self.start_worker(&name, p);
        }
        Ok(())
    }

    /// Stops reading, waits for the handlers within the shutdown timeout
    /// (or until `now` fires), lets the last acks go out, and returns.
    pub(super) async fn drain(mut self, now: &CancellationToken) {
        // Cranelift compiles for the running versions stop now: their code
        // would not serve again.
        self.optimizing.clear();
        let timeout = self.config().host.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        self.readers.cancel();
        // Readers finish the read they are in, and the router routes what it
        // read (within the deadline: a route script already sent runs
        // whole or not at all in Redis, so abandoning the wait loses
        // nothing).
        self.loops.close();
        tokio::select! {
            _ = self.loops.wait() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = now.cancelled() => {}
        }
        let all = self.all_tasks();
        for t in &all {
            t.handlers.close();
        }
        let in_flight = |all: &[&WorkerTasks]| all.iter().map(|t| t.handlers.len()).sum::<usize>();
        if in_flight(&all) > 0 {
            tracing::info!(
                event = "draining",
                in_flight = in_flight(&all),
                ?timeout,
                "Waiting for in-flight handlers."
            );
        }
        let handlers = async {
            for t in &all {
                t.handlers.wait().await;
            }
        };
        let finished = tokio::select! {
            _ = handlers => true,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    event = "shutdown_timeout",
                    unfinished = in_flight(&all),
                    "Shutdown timeout reached; unfinished messages stay pending and will be delivered again."
                );
                false
            }
            _ = now.cancelled() => false,
        };
        // Every finished handler has seen its ack go out; stop the lease
        // renewals. The ack tasks end with the last handler. With handlers
        // left unfinished there is nothing more to wait for.
        for t in &all {
            t.bookkeeping_done.cancel();
            t.bookkeeping.close();
        }
        if !finished {
            tracing::info!(event = "stopped", "Switchyard stopped.");
            return;
        }
        let bookkeeping = async {
            for t in &all {
                t.bookkeeping.wait().await;
            }
        };
        tokio::select! {
            _ = bookkeeping => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                tracing::warn!(
                    event = "bookkeeping_timeout",
                    tasks = all.iter().map(|t| t.bookkeeping.len()).sum::<usize>(),
                    "Acks and lease renewals did not stop within 2 s; exiting anyway."
                );
            }
            _ = now.cancelled() => {}
        }
        tracing::info!(event = "stopped", "Switchyard stopped.");
    }
}
