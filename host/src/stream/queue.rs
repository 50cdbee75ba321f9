//! One queue's stream as its workers see it: read new entries, take over
//! abandoned ones, and settle each message (ack, retry later, dead-letter),
//! every settlement one atomic step.

use std::time::Duration;

use crate::redis::Conn;

use super::{Keys, Partition, Replicas, dead_fields, now_rfc3339};
use crate::message::MAX_FIELDS;
use crate::message::Published;
use crate::redis::read::{self, Bounds, ReadBatch};
use crate::redis::scripts::{ACK_PUBLISH, RENEW, RETRY_LATER, SETTLE_DEAD};
use crate::redis::{Doing, StreamError, StreamResult};

/// The failed attempts of a message pending a retry, kept in Redis (the
/// queue's errors hash) so that any host, after any restart, continues the
/// record and puts it in the dead-letter entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailureHistory {
    /// When the first attempt failed, RFC 3339.
    pub first: String,
    /// When the last attempt failed, RFC 3339.
    pub last: String,
    /// The last few failures, oldest first: `attempt N (kind): reason`.
    pub errors: Vec<String>,
    /// Attempts that trapped, of all so far.
    #[serde(default)]
    pub traps: u32,
}

/// Failures kept per message; older ones are dropped.
const KEPT_FAILURES: usize = 5;

impl FailureHistory {
    /// Adds a failed attempt, its reason cut to
    /// [`crate::text::MAX_REASON`] bytes.
    pub fn record(&mut self, attempt: u32, kind: &str, reason: &str, at: &str) {
        if self.first.is_empty() {
            self.first = at.to_owned();
        }
        self.last = at.to_owned();
        if kind == crate::kinds::FailureKind::Trap.label() {
            self.traps += 1;
        }
        let reason = crate::text::bounded(reason, crate::text::MAX_REASON);
        self.errors
            .push(format!("attempt {attempt} ({kind}): {reason}"));
        if self.errors.len() > KEPT_FAILURES {
            self.errors.remove(0);
        }
    }
}

/// A queue's stream in one partition, its group and consumer.
#[derive(Clone)]
pub struct QueueStream {
    conn: Conn,
    pub queue: String,
    pub partition: Partition,
    pub stream: String,
    group: String,
    pub consumer: String,
    errors: String,
    dead: String,
    /// Where what plugins publish goes: the partition's ingress, so that
    /// follow-ups enter with the acknowledgement, in one step.
    ingress: String,
    /// The replicas each settlement waits for, if any.
    replicas: Replicas,
}

impl std::fmt::Debug for QueueStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStream")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl QueueStream {
    pub fn new(
        conn: Conn,
        keys: &Keys,
        partition: &Partition,
        queue: &str,
        consumer: &str,
        replicas: Replicas,
    ) -> Self {
        QueueStream {
            conn,
            queue: queue.to_owned(),
            partition: partition.clone(),
            stream: partition.queue_stream(queue),
            group: keys.group().to_owned(),
            consumer: consumer.to_owned(),
            errors: partition.errors(queue),
            dead: partition.dead_letter(),
            ingress: partition.ingress.clone(),
            replicas,
        }
    }

    /// The consumer group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Takes over up to `count` entries pending for longer than `min_idle`:
    /// their consumer died or hung, or a failed attempt's retry delay is over.
    /// Each comes with its delivery count (XAUTOCLAIM counts the take-over),
    /// and one over `max_bytes` comes as its size only.
    pub async fn claim_idle(
        &self,
        min_idle: Duration,
        cursor: &str,
        count: usize,
        max_bytes: usize,
    ) -> StreamResult<ReadBatch> {
        let mut conn = self.conn.clone();
        read::claim(
            &mut conn,
            &self.stream,
            &self.group,
            &self.consumer,
            min_idle,
            cursor,
            count,
            Bounds {
                max_bytes,
                // The router adds `type` and `id` to a copy when the
                // producer left them out.
                max_fields: MAX_FIELDS + 2,
            },
        )
        .await
    }

    /// Resets the idle clock of entries this consumer is handling, so no
    /// other consumer takes them over; an entry another consumer has taken
    /// meanwhile is left alone. Returns how many were renewed.
    pub async fn renew_leases(&self, ids: &[String]) -> StreamResult<u64> {
        let mut inv = RENEW.key(&self.stream);
        inv.arg(&self.group).arg(&self.consumer);
        for id in ids {
            inv.arg(id);
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn)
            .await
            .doing(|| format!("renewing leases on {:?}", self.stream))
    }

    /// Creates the group again at the start of the stream (never at `$`,
    /// which would skip every entry in it).
    pub async fn recreate_group(&self) -> StreamResult<()> {
        let mut conn = self.conn.clone();
        super::ensure_group(&mut conn, &self.stream, &self.group).await
    }

    /// The messages were handled: acknowledge them, in one XACK, and add
    /// what their calls published to the ingress stream, in the same step.
    /// Each id with `true` beside it also has its recorded failures cleared.
    pub async fn ack(&self, acks: &[(String, bool)], published: &[Published]) -> StreamResult<()> {
        if !published.is_empty() {
            return self.ack_publishing(acks, published).await;
        }
        let mut writer = self.replicas.writer(&self.conn).await?;
        let mut pipe = redis::pipe();
        let cleared: Vec<&str> = acks
            .iter()
            .filter(|(_, had_failures)| *had_failures)
            .map(|(id, _)| id.as_str())
            .collect();
        if !cleared.is_empty() {
            pipe.atomic();
        }
        let xack = pipe.cmd("XACK").arg(&self.stream).arg(&self.group);
        for (id, _) in acks {
            xack.arg(id);
        }
        xack.ignore();
        if !cleared.is_empty() {
            pipe.cmd("HDEL").arg(&self.errors).arg(&cleared).ignore();
        }
        pipe.query_async::<()>(writer.conn())
            .await
            .doing(|| format!("acking {} entries on {:?}", acks.len(), self.stream))?;
        writer.replicated(&self.stream).await;
        Ok(())
    }

    async fn ack_publishing(
        &self,
        acks: &[(String, bool)],
        published: &[Published],
    ) -> StreamResult<()> {
        let mut inv = ACK_PUBLISH.key(&self.stream);
        inv.key(&self.errors).key(&self.ingress);
        inv.arg(&self.group).arg(acks.len());
        for (id, _) in acks {
            inv.arg(id);
        }
        let cleared: Vec<&str> = acks
            .iter()
            .filter(|(_, had_failures)| *had_failures)
            .map(|(id, _)| id.as_str())
            .collect();
        inv.arg(cleared.len());
        for id in &cleared {
            inv.arg(*id);
        }
        inv.arg(published.len());
        for p in published {
            let fields = p.fields();
            inv.arg(fields.len() * 2);
            for (k, v) in fields {
                inv.arg(k).arg(v);
            }
        }
        let mut writer = self.replicas.writer(&self.conn).await?;
        inv.invoke_async::<redis::Value>(writer.conn())
            .await
            .map(drop)
            .doing(|| {
                format!(
                    "acking {} entries and publishing {} messages on {:?}",
                    acks.len(),
                    published.len(),
                    self.stream
                )
            })?;
        writer.replicated(&self.stream).await;
        Ok(())
    }

    /// The attempt failed and another will follow: keep the message pending,
    /// record its failures, and set its idle clock so that it becomes
    /// claimable (idle for `visibility_timeout`) after `delay`. The schedule
    /// lives in Redis, so another host, or this one after a restart, keeps
    /// it. Returns false when the message was no longer this consumer's
    /// (another host took it over), and nothing was done.
    pub async fn retry_later(
        &self,
        id: &str,
        visibility_timeout: Duration,
        delay: Duration,
        history: &FailureHistory,
    ) -> StreamResult<bool> {
        let idle = visibility_timeout.saturating_sub(delay).as_millis() as u64;
        let record = serde_json::to_string(history)
            .map_err(|e| StreamError::protocol("recording failures", e.to_string()))?;
        let mut inv = RETRY_LATER.key(&self.stream);
        inv.key(&self.errors)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(id)
            .arg(idle)
            .arg(record);
        let mut writer = self.replicas.writer(&self.conn).await?;
        let scheduled: i64 = inv
            .invoke_async(writer.conn())
            .await
            .doing(|| format!("scheduling a retry of {id} on {:?}", self.stream))?;
        writer.replicated(&self.stream).await;
        Ok(scheduled == 1)
    }

    /// Forgets the failures recorded for messages that no longer exist
    /// (their entries were deleted from the stream).
    pub async fn forget(&self, ids: &[String]) -> StreamResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("HDEL")
            .arg(&self.errors)
            .arg(ids)
            .query_async::<()>(&mut conn)
            .await
            .doing(|| format!("forgetting failures on {:?}", self.stream))
    }

    /// The failures recorded for a pending message.
    pub async fn failures(&self, id: &str) -> StreamResult<Option<FailureHistory>> {
        let mut conn = self.conn.clone();
        let record: Option<String> = redis::cmd("HGET")
            .arg(&self.errors)
            .arg(id)
            .query_async(&mut conn)
            .await
            .doing(|| format!("reading the failures of {id}"))?;
        Ok(record.map(|r| {
            serde_json::from_str(&r).unwrap_or_else(|_| {
                // Written by something else: keep it as one opaque error.
                FailureHistory {
                    errors: vec![r],
                    ..Default::default()
                }
            })
        }))
    }

    /// Moves an entry to the dead-letter stream with `reason` and acks it, in
    /// one step, if it is still pending for this consumer. Its fields are
    /// copied inside Redis (see `lua/dead_letter.lua`), so an entry the host
    /// did not read whole can be dead-lettered too. Returns the dead letter's
    /// id, or `None` when the message was no longer this consumer's (another
    /// host took it over, or this call was already made).
    pub async fn dead_letter(
        &self,
        id: &str,
        reason: &str,
        attempts: u32,
        plugin: &str,
        history: Option<&FailureHistory>,
    ) -> StreamResult<Option<String>> {
        let mut inv = SETTLE_DEAD.key(&self.stream);
        inv.key(&self.dead).key(&self.errors);
        inv.arg(&self.group).arg(&self.consumer).arg(id);
        let attempts = attempts.to_string();
        let at = now_rfc3339();
        let mut host: Vec<(&str, String)> = vec![
            (
                dead_fields::REASON,
                crate::text::bounded(reason, 4 * crate::text::MAX_REASON),
            ),
            (dead_fields::QUEUE, self.queue.clone()),
            (dead_fields::SOURCE, self.stream.clone()),
            (dead_fields::SOURCE_ID, id.to_owned()),
            (dead_fields::ATTEMPTS, attempts),
            (dead_fields::AT, at),
            (dead_fields::PLUGIN, plugin.to_owned()),
        ];
        if let Some(h) = history {
            let errors = serde_json::to_string(&h.errors)
                .map_err(|e| StreamError::protocol("recording failures", e.to_string()))?;
            host.push((dead_fields::ERRORS, errors));
            host.push((dead_fields::FIRST_FAILURE, h.first.clone()));
            host.push((dead_fields::LAST_FAILURE, h.last.clone()));
        }
        for (k, v) in &host {
            inv.arg(*k).arg(v);
        }
        let mut writer = self.replicas.writer(&self.conn).await?;
        let dead = inv
            .invoke_async(writer.conn())
            .await
            .doing(|| format!("dead-lettering {id} of {:?}", self.stream))?;
        writer.replicated(&self.stream).await;
        Ok(dead)
    }
}
