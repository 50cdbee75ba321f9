//! Writing settlements to Redis: acks gathered in batches (with what the
//! calls published), dead letters and retries one by one, and the leases
//! of the messages being handled renewed meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::*;

use crate::message::Published;
use crate::metrics::QueueMetrics;
use crate::redis::{StreamError, StreamResult};
use crate::stream::queue::QueueStream;

/// Acks gathered into one XACK: as many as arrived while the last one was
/// under way, up to this many.
pub(super) const MAX_ACK_BATCH: usize = 512;

/// One handled message waiting for its ack, and who to tell when it is done.
pub(super) struct AckRequest {
    pub(super) id: String,
    pub(super) had_failures: bool,
    /// Published with the ack, in the same step.
    pub(super) published: Vec<Published>,
    pub(super) done: oneshot::Sender<StreamResult<()>>,
}

impl Shared {
    /// Renews the lease of every message being handled, every third of the
    /// visibility timeout, so that no other consumer takes over a message a
    /// live host is still handling, however long its handler runs. Ends when
    /// `done` fires.
    pub(super) async fn renew_leases(self: Arc<Self>, done: CancellationToken) {
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

    /// Writes a settlement to Redis, in one atomic step. Returns false when
    /// the message was no longer this consumer's, and nothing was written.
    pub(super) async fn settle(
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
                    .dead_letter(id, &reason.to_string(), *attempts, plugin, history.as_ref())
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

/// Acks handled messages in batches: each XACK takes every ack that arrived
/// while the previous one was under way. Under load that is one round trip
/// for many messages; when idle, an ack goes out at once. What the calls
/// published goes out in the same step as their acks. Runs until every
/// sender is gone.
pub(super) async fn ack_batches(
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
