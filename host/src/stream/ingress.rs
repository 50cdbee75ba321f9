//! The router loop: reads one partition's ingress stream through the
//! consumer group and fans each entry out to its queues in the same
//! partition, or dead-letters it there, in one atomic step.
//!
//! What the router reads is bounded: at most `ingress.batch` entries, none
//! held over `ingress.max_entry_kib` (see [`crate::redis::bounded`]); those are
//! dead-lettered by the route script, copied inside Redis.

use std::sync::Arc;
use std::time::Duration;

use crate::redis::Conn;
use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::reclaim::ReclaimSchedule;
use super::{Keys, Partition, Replicas, dead_fields, now_rfc3339};
use crate::config::{Config, MissingGroup};
use crate::events;
use crate::failpoint;
use crate::message::MAX_FIELDS;
use crate::metrics::Metrics;
use crate::reason::DeadReason;
use crate::redis::bounded::BoundedReader;
use crate::redis::read::{self, Bounds, ReadEntry, SCRIPT_BUDGET};
use crate::redis::scripts::ROUTE;
use crate::redis::{Backoff, Doing, Health, RedisFailure, StreamResult};
use crate::router::{Decision, Router};
use crate::text::bounded;

/// How long one blocking read waits for new entries. Also bounds how long
/// shutdown waits for the router to notice.
const BLOCK: Duration = Duration::from_millis(500);

/// Reads one partition's ingress stream and routes what it reads.
pub struct IngressRouter {
    pub partition: Partition,
    /// Waits for replicas after each step, as configured.
    pub replicas: Replicas,
    /// Claims and the route script.
    pub conn: Conn,
    /// Blocking reads of new entries, bounded: a connection of its own.
    pub reader: BoundedReader,
    pub keys: Keys,
    pub consumer: String,
    /// The routes and the ingress settings, swapped whole on a reload.
    pub router: Arc<ArcSwap<Router>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The running configuration, for `host.on_missing_group`.
    pub settings: Arc<ArcSwap<Config>>,
    /// The group was found missing and that was said.
    pub group_reported: bool,
}

impl std::fmt::Debug for IngressRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressRouter")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl IngressRouter {
    fn stream(&self) -> String {
        self.partition.ingress.clone()
    }

    /// Routes until `cancel` fires. A batch that was read is always finished
    /// before the loop stops.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut reclaim = ReclaimSchedule::new(tokio::time::Instant::now());
        let mut backoff = Backoff::default();
        while !cancel.is_cancelled() {
            let step = async {
                let router = self.router.load_full();
                let now = tokio::time::Instant::now();
                let mut entries = Vec::new();
                // Entries a stopped router left are looked for a quarter of
                // the visibility timeout apart.
                let interval = router.ingress.visibility_timeout / 4;
                if reclaim.is_due(now) {
                    let claimed = read::claim(
                        &mut self.conn,
                        &self.partition.ingress,
                        self.keys.group(),
                        &self.consumer,
                        router.ingress.visibility_timeout,
                        reclaim.cursor(),
                        router.ingress.batch,
                        bounds(&router),
                    )
                    .await?;
                    let found = claimed.entries.len();
                    reclaim.looked(now, claimed.cursor, found, interval);
                    if found > 0 {
                        events::ingress_reclaimed(&self.metrics, &self.partition.ingress, found);
                    }
                    entries = claimed.entries;
                }
                if entries.is_empty() {
                    entries = self
                        .reader
                        .read_new(
                            &self.partition.ingress,
                            self.keys.group(),
                            &self.consumer,
                            router.ingress.batch,
                            reclaim.read_wait(now, Duration::from_millis(10), BLOCK),
                            bounds(&router),
                        )
                        .await?;
                }
                if !entries.is_empty() {
                    // The routes as they are now, not as they were when the
                    // read began: an edit may have landed while it waited.
                    let router = self.router.load_full();
                    self.route(&router, &entries).await?;
                }
                StreamResult::Ok(entries.len())
            };
            match step.await {
                Ok(_) => {
                    backoff.reset();
                    self.health.ok();
                    if std::mem::take(&mut self.group_reported) {
                        tracing::info!(stream = %self.stream(), "The ingress consumer group is back; routing again.");
                    }
                }
                Err(e) => {
                    if e.kind == RedisFailure::MissingGroup {
                        self.group_missing().await;
                    } else {
                        self.health.failed(&e);
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(backoff.delay()) => {}
                    }
                }
            }
        }
        tracing::info!(stream = %self.stream(), "Router stopped.");
    }

    /// The ingress group is gone: said loudly, and recreated at the start of
    /// the stream only if the operator chose so.
    async fn group_missing(&mut self) {
        let stream = self.stream();
        if self.settings.load().host.on_missing_group == MissingGroup::Stop {
            if std::mem::replace(&mut self.group_reported, true) {
                return;
            }
            tracing::error!(stream = %stream, "The ingress consumer group is gone (did Redis lose its data?); not routing until an operator recreates it (host.on_missing_group = \"stop\").");
            return;
        }
        tracing::error!(stream = %stream, "The ingress consumer group is gone (did Redis lose its data?); recreating it at the start of the stream (host.on_missing_group = \"recreate\").");
        if let Err(e) = super::ensure_group(&mut self.conn, &stream, self.keys.group()).await {
            tracing::error!(stream = %stream, error = %e, "Recreating the ingress consumer group failed.");
        }
    }

    /// Routes `entries`: every decision is made here, before anything is
    /// written. Each route script call is atomic; a batch whose copies would
    /// amount to more than [`SCRIPT_BUDGET`] bytes is routed in several
    /// calls, so no call holds Redis long.
    async fn route(&mut self, router: &Router, entries: &[ReadEntry]) -> StreamResult<()> {
        let decisions: Vec<Decision> = entries.iter().map(|e| router.decide_read(e)).collect();
        let mut start = 0;
        while start < entries.len() {
            let mut end = start;
            let mut volume = 0;
            while end < entries.len() && (end == start || volume < SCRIPT_BUDGET) {
                volume += copy_volume(&entries[end], &decisions[end]);
                end += 1;
            }
            self.route_step(&entries[start..end], &decisions[start..end])
                .await?;
            start = end;
        }
        Ok(())
    }

    /// Routes `entries` in one script call.
    async fn route_step(
        &mut self,
        entries: &[ReadEntry],
        decisions: &[Decision<'_>],
    ) -> StreamResult<()> {
        let stream = &self.partition.ingress;
        let dead_key = self.partition.dead_letter();
        let mut keys: Vec<String> = vec![stream.clone(), dead_key];
        let key_index = |key: String, keys: &mut Vec<String>| -> usize {
            match keys.iter().position(|k| *k == key) {
                Some(i) => i + 1,
                None => {
                    keys.push(key);
                    keys.len()
                }
            }
        };
        let mut inv = ROUTE.prepare_invoke();
        inv.arg(self.keys.group()).arg(entries.len());
        let mut routed = 0u64;
        // Reported once they are written: (entry id, queue, reason).
        let mut dead: Vec<(&str, Option<&str>, &DeadReason)> = Vec::new();
        let at = now_rfc3339();
        // One span per routed message, in its producer's trace, ended once
        // its copies are committed.
        let mut spans = Vec::new();
        for (read, decision) in entries.iter().zip(decisions) {
            let id = read.id();
            inv.arg(id);
            match decision {
                Decision::Fanout {
                    message_id,
                    message_type,
                    queues,
                    refused,
                    fields,
                    edits,
                } => {
                    tracing::debug!(msg_id = %message_id, msg_type = %message_type, queues = %queues.join(","), "Routing message.");
                    let cut = |t: &str| crate::text::bounded(t, crate::telemetry::MAX_ATTRIBUTE);
                    let span = tracing::info_span!(
                        "route",
                        msg_id = %cut(message_id),
                        msg_type = %cut(message_type),
                        queues = %queues.join(","),
                    );
                    let traceparent = fields
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(b"traceparent"))
                        .and_then(|(_, v)| std::str::from_utf8(v).ok())
                        .filter(|v| crate::telemetry::valid_traceparent(v));
                    crate::telemetry::continue_trace(&span, traceparent);
                    spans.push(span);
                    inv.arg(queues.len());
                    for q in queues {
                        inv.arg(key_index(self.partition.queue_stream(q), &mut keys));
                    }
                    inv.arg((fields.len() + edits.added.len()) * 2);
                    for (k, v) in edits.fields(fields) {
                        inv.arg(k).arg(v);
                    }
                    inv.arg(refused.len());
                    for r in refused {
                        push_dead(&mut inv, &r.reason.to_string(), &r.queue, stream, id, &at);
                        dead.push((id, Some(&r.queue), &r.reason));
                    }
                    routed += 1;
                }
                Decision::DeadLetter { reason } => {
                    inv.arg(0).arg(0).arg(1);
                    push_dead(&mut inv, &reason.to_string(), "", stream, id, &at);
                    dead.push((id, None, reason));
                }
            }
        }
        for k in &keys {
            inv.key(k);
        }
        failpoint::hit("router-before-commit");
        let mut writer = self.replicas.writer(&self.conn).await?;
        let done: u64 = inv
            .invoke_async(writer.conn())
            .await
            .doing(|| format!("routing {} entries of {stream:?}", entries.len()))?;
        failpoint::hit("router-after-commit");
        writer.replicated(stream).await;
        drop(spans);
        if done < entries.len() as u64 {
            tracing::info!(
                skipped = entries.len() as u64 - done,
                "Entries already routed by another router were skipped."
            );
        }
        events::routed(&self.metrics, routed);
        for (entry_id, queue, reason) in dead {
            events::ingress_dead_lettered(&self.metrics, stream, entry_id, queue, reason);
        }
        Ok(())
    }
}

/// What the router holds of an entry at most.
fn bounds(router: &Router) -> Bounds {
    Bounds {
        max_bytes: router.ingress.max_entry_bytes,
        max_fields: MAX_FIELDS,
    }
}

/// About how many bytes routing an entry copies inside Redis: one copy per
/// queue, one per dead letter (which copies the stored entry).
fn copy_volume(read: &ReadEntry, decision: &Decision<'_>) -> usize {
    let bytes = match read {
        ReadEntry::Whole { entry, .. } => crate::message::entry_bytes(&entry.fields),
        ReadEntry::TooLarge { bytes, .. } => *bytes as usize,
    };
    let copies = match decision {
        Decision::Fanout {
            queues, refused, ..
        } => queues.len() + refused.len(),
        Decision::DeadLetter { .. } => 1,
    };
    bytes * copies.max(1)
}

/// The host fields of one dead letter the route script adds.
fn push_dead(
    inv: &mut redis::ScriptInvocation<'_>,
    reason: &str,
    queue: &str,
    stream: &str,
    id: &str,
    at: &str,
) {
    let reason = bounded(reason, crate::text::MAX_REASON * 2);
    let record = [
        (dead_fields::REASON, reason.as_str()),
        (dead_fields::QUEUE, queue),
        (dead_fields::SOURCE, stream),
        (dead_fields::SOURCE_ID, id),
        (dead_fields::ATTEMPTS, "0"),
        (dead_fields::AT, at),
    ];
    inv.arg(record.len() * 2);
    for (k, v) in record {
        inv.arg(k).arg(v);
    }
}
