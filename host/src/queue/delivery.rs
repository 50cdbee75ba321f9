//! One delivery of one message: the plugin run (or the reason it is not),
//! the settlement decided, logged and counted, then written.

use std::sync::atomic::Ordering;

use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::*;

use crate::config::QueueConfig;
use crate::events;
use crate::message::{Message, entry_bytes};
use crate::metrics::QueueMetrics;
use crate::plugin::{Delivery, Outcome};
use crate::reason::{DeadReason, SizeBound};
use crate::redis::read::ReadEntry;
use crate::redis::{Backoff, StreamResult};
use crate::stream::now_rfc3339;

impl Shared {
    /// Runs one delivery of one message and settles it. If Redis cannot be
    /// reached to settle it, settling is retried for a while (half the
    /// visibility timeout), so a short outage does not make a handled message
    /// run again; after that it stays pending and is delivered again.
    pub(super) async fn handle(&self, entry: ReadEntry, slot: OwnedSemaphorePermit) {
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
        let unusable = |reason: DeadReason| (Delivered::Unusable { reason }, None);
        let (delivered, message) = match entry {
            ReadEntry::TooLarge { bytes, .. } => unusable(too_large(q, bytes)),
            ReadEntry::Whole { entry, .. } if entry_bytes(&entry.fields) > q.max_entry_bytes => {
                unusable(too_large(q, entry_bytes(&entry.fields) as u64))
            }
            ReadEntry::Whole { entry, .. } => match Message::read(&entry.id, entry.fields) {
                Err(e) => unusable(e.into()),
                Ok(m) if attempt > q.max_attempts => (Delivered::Exhausted, Some(m)),
                Ok(m) if hops(&m) > q.max_hops => (
                    Delivered::Unusable {
                        reason: DeadReason::TooManyHops {
                            hops: hops(&m),
                            queue: q.name.clone(),
                            max: q.max_hops,
                        },
                    },
                    Some(m),
                ),
                Ok(mut m) => {
                    let result = self.call(rt, &mut m, attempt).await;
                    (Delivered::Ran(result.outcome, result.published), Some(m))
                }
            },
        };
        let history = if needs_history(&delivered, attempt) {
            self.stream.failures(&entry_id).await?
        } else {
            None
        };
        let settlement = settlement(
            &delivered,
            attempt,
            &q.retry_policy(),
            history.as_ref(),
            &now_rfc3339(),
        );
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

    /// Calls the plugin on `m`, whose body and headers move into the call:
    /// what stays is its id and type, for the record.
    async fn call(
        &self,
        rt: &QueueRuntime,
        m: &mut Message,
        attempt: u32,
    ) -> crate::plugin::CallResult {
        // One span per handling, in the producer's trace.
        let producers = m
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            .map(|(_, v)| v.clone())
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
        crate::telemetry::continue_trace(&span, producers.as_deref());
        let trace = crate::telemetry::traceparent_of(&span).or(producers);
        let delivery = Delivery {
            id: m.id.clone(),
            message_type: m.message_type.clone(),
            queue: rt.queue.name.clone(),
            body: std::mem::take(&mut m.body),
            headers: std::mem::take(&mut m.headers),
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

    /// Reports a decided delivery: how its attempt ended, and how it
    /// settles.
    fn record(
        &self,
        rt: &QueueRuntime,
        entry_id: &str,
        message: Option<&Message>,
        attempt: u32,
        delivered: &Delivered,
        settlement: &Settlement,
    ) {
        let (msg_id, msg_type) = message.map_or((entry_id, ""), |m| (&m.id, &m.message_type));
        let h = events::Handling {
            queue: &rt.queue.name,
            msg_id,
            msg_type,
            attempt,
            plugin: &rt.plugin.hash,
        };
        let m = &self.metrics;
        let ended = match delivered {
            Delivered::Ran(outcome, _) => Some(ended(outcome)),
            Delivered::Unusable { .. } | Delivered::Exhausted => None,
        };
        if let Some(ended) = ended {
            events::attempt_ended(m, ended);
        }
        match settlement {
            Settlement::Ack { .. } => events::handled(m, &h),
            Settlement::DeadLetter { reason, .. } => events::dead_lettered(m, &h, ended, reason),
            Settlement::RetryLater {
                delay,
                cut_from,
                history,
            } => {
                let reason = history.errors.last().map_or("", String::as_str);
                let ended = ended.unwrap_or(events::Ended::Retry);
                events::retry_scheduled(&h, ended, reason, *delay, *cut_from);
            }
        }
    }
}

/// How an outcome is counted.
fn ended(outcome: &Outcome) -> events::Ended {
    match outcome {
        Outcome::Success => events::Ended::Success,
        Outcome::Retry { .. } => events::Ended::Retry,
        Outcome::Reject { .. } => events::Ended::Reject,
        Outcome::Failed { kind, .. } => events::Ended::Failed(*kind),
    }
}

/// How many publications led to a message.
fn hops(m: &Message) -> u32 {
    m.headers
        .iter()
        .find(|(k, _)| k == crate::message::HOPS_HEADER)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn too_large(q: &QueueConfig, bytes: u64) -> DeadReason {
    DeadReason::TooLarge {
        bytes,
        bound: SizeBound::Queue {
            queue: q.name.clone(),
            bytes: q.max_entry_bytes,
        },
    }
}
