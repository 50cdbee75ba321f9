//! One queue's stream as its workers see it: read new entries, take over
//! abandoned ones, and settle each message (ack, retry later, dead-letter),
//! every settlement one atomic step.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use redis::Value;
use redis::aio::{ConnectionManager, MultiplexedConnection};

use super::{Entry, Keys, dead_fields, now_rfc3339, parse_entries, parse_read};

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
}

/// Failures kept per message; older ones are dropped.
const KEPT_FAILURES: usize = 5;
/// Bytes kept of one failure's reason.
const MAX_REASON: usize = 1024;

impl FailureHistory {
    /// Adds a failed attempt.
    pub fn record(&mut self, attempt: u32, kind: &str, reason: &str) {
        let now = now_rfc3339();
        if self.first.is_empty() {
            self.first = now.clone();
        }
        self.last = now;
        let mut reason = reason.to_owned();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        self.errors
            .push(format!("attempt {attempt} ({kind}): {reason}"));
        if self.errors.len() > KEPT_FAILURES {
            self.errors.remove(0);
        }
    }
}

/// For each entry id: if it is pending for this consumer, XCLAIM it to this
/// consumer again with JUSTID, which resets its idle time and leaves its
/// delivery count alone. KEYS[1]: stream; ARGV: group, consumer, ids.
const RENEW_SCRIPT: &str = r#"
local renewed = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
"#;

/// A queue's stream, group and consumer.
#[derive(Clone)]
pub struct QueueStream {
    conn: ConnectionManager,
    pub queue: String,
    pub stream: String,
    group: String,
    pub consumer: String,
    errors: String,
    dead: String,
}

impl std::fmt::Debug for QueueStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStream")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// Entries taken over from other consumers, with their delivery counts.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Where the next scan of the pending list starts; `0-0` when this scan
    /// reached its end.
    pub cursor: String,
    /// Each entry with the number of times it has now been delivered.
    pub entries: Vec<(Entry, u32)>,
    /// Pending ids whose entries no longer exist (trimmed away).
    pub deleted: Vec<String>,
}

impl QueueStream {
    pub fn new(conn: ConnectionManager, keys: &Keys, queue: &str, consumer: &str) -> Self {
        QueueStream {
            conn,
            queue: queue.to_owned(),
            stream: keys.queue_stream(queue),
            group: keys.group().to_owned(),
            consumer: consumer.to_owned(),
            errors: keys.errors(queue),
            dead: keys.dead_letter(),
        }
    }

    /// Reads up to `count` entries never delivered to any consumer, waiting
    /// up to `block` for one to arrive. Uses `reader`, a connection of its
    /// own, since it blocks.
    pub async fn read_new(
        &self,
        reader: &mut MultiplexedConnection,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(reader)
            .await
            .with_context(|| format!("reading queue stream {:?}", self.stream))?;
        parse_read(&reply)
    }

    /// Takes over up to `count` entries pending for longer than `min_idle`:
    /// their consumer died or hung, or a failed attempt's retry delay is over.
    /// Delivery counts come from XPENDING, which every Redis version reports
    /// (XAUTOCLAIM does not return them).
    pub async fn claim_idle(
        &self,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<Claimed> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .with_context(|| format!("claiming idle entries of {:?}", self.stream))?;
        let Value::Array(parts) = &reply else {
            anyhow::bail!("unexpected XAUTOCLAIM reply: {reply:?}");
        };
        let cursor = parts
            .first()
            .and_then(super::string)
            .unwrap_or_else(|| "0-0".into());
        let entries = parts
            .get(1)
            .map(parse_entries)
            .transpose()?
            .unwrap_or_default();
        let deleted = match parts.get(2) {
            Some(Value::Array(ids)) => ids.iter().filter_map(super::string).collect(),
            _ => Vec::new(),
        };
        if entries.is_empty() {
            return Ok(Claimed {
                cursor,
                entries: Vec::new(),
                deleted,
            });
        }
        let counts = self.delivery_counts(&entries).await?;
        let entries = entries
            .into_iter()
            .map(|e| {
                let n = counts.get(&e.id).copied().unwrap_or(2);
                (e, n)
            })
            .collect();
        Ok(Claimed {
            cursor,
            entries,
            deleted,
        })
    }

    async fn delivery_counts(&self, entries: &[Entry]) -> Result<HashMap<String, u32>> {
        let mut pipe = redis::pipe();
        for e in entries {
            pipe.cmd("XPENDING")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&e.id)
                .arg(&e.id)
                .arg(1);
        }
        let mut conn = self.conn.clone();
        let replies: Vec<Value> = pipe
            .query_async(&mut conn)
            .await
            .with_context(|| format!("reading delivery counts of {:?}", self.stream))?;
        let mut counts = HashMap::new();
        for reply in replies {
            // [[id, consumer, idle ms, delivery count]]
            if let Value::Array(rows) = reply
                && let Some(Value::Array(row)) = rows.first()
                && let (Some(id), Some(Value::Int(n))) =
                    (row.first().and_then(super::string), row.get(3))
            {
                counts.insert(id, (*n).clamp(1, i64::from(u32::MAX)) as u32);
            }
        }
        Ok(counts)
    }

    /// Resets the idle clock of entries this consumer is handling, so no
    /// other consumer takes them over; an entry another consumer has taken
    /// meanwhile is left alone. Returns how many were renewed.
    pub async fn renew_leases(&self, ids: &[String]) -> Result<u64> {
        let script = redis::Script::new(RENEW_SCRIPT);
        let mut inv = script.key(&self.stream);
        inv.arg(&self.group).arg(&self.consumer);
        for id in ids {
            inv.arg(id);
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn)
            .await
            .with_context(|| format!("renewing leases on {:?}", self.stream))
    }

    /// Creates the group again at the start of the stream (never at `$`,
    /// which would skip every entry in it).
    pub async fn recreate_group(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        super::ensure_group(&mut conn, &self.stream, &self.group).await
    }

    /// The messages were handled: acknowledge them, in one XACK. Each id
    /// with `true` beside it also has its recorded failures cleared (in the
    /// same transaction).
    pub async fn ack(&self, acks: &[(String, bool)]) -> Result<()> {
        let mut conn = self.conn.clone();
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
        pipe.query_async::<()>(&mut conn)
            .await
            .with_context(|| format!("acking {} entries on {:?}", acks.len(), self.stream))
    }

    /// The attempt failed and another will follow: keep the message pending,
    /// record its failures, and set its idle clock so that it becomes
    /// claimable (idle for `visibility_timeout`) after `delay`. The schedule
    /// lives in Redis, so another host, or this one after a restart, keeps
    /// it.
    pub async fn retry_later(
        &self,
        id: &str,
        visibility_timeout: Duration,
        delay: Duration,
        history: &FailureHistory,
    ) -> Result<()> {
        let idle = visibility_timeout.saturating_sub(delay).as_millis() as u64;
        let record = serde_json::to_string(history)?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("XCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(0)
            .arg(id)
            .arg("IDLE")
            .arg(idle)
            .arg("JUSTID")
            .ignore()
            .cmd("HSET")
            .arg(&self.errors)
            .arg(id)
            .arg(record)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .with_context(|| format!("scheduling a retry of {id} on {:?}", self.stream))
    }

    /// The failures recorded for a pending message.
    pub async fn failures(&self, id: &str) -> Result<Option<FailureHistory>> {
        let mut conn = self.conn.clone();
        let record: Option<String> = redis::cmd("HGET")
            .arg(&self.errors)
            .arg(id)
            .query_async(&mut conn)
            .await
            .with_context(|| format!("reading the failures of {id}"))?;
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
    /// one step.
    pub async fn dead_letter(
        &self,
        entry: &Entry,
        reason: &str,
        attempts: u32,
        plugin: &str,
        history: Option<&FailureHistory>,
    ) -> Result<String> {
        let mut conn = self.conn.clone();
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.dead)
            .arg("*")
            .arg(dead_fields::REASON)
            .arg(reason)
            .arg(dead_fields::QUEUE)
            .arg(&self.queue)
            .arg(dead_fields::SOURCE)
            .arg(&self.stream)
            .arg(dead_fields::SOURCE_ID)
            .arg(&entry.id)
            .arg(dead_fields::ATTEMPTS)
            .arg(attempts)
            .arg(dead_fields::AT)
            .arg(now_rfc3339())
            .arg(dead_fields::PLUGIN)
            .arg(plugin);
        if let Some(h) = history {
            xadd.arg(dead_fields::ERRORS)
                .arg(serde_json::to_string(&h.errors)?)
                .arg(dead_fields::FIRST_FAILURE)
                .arg(&h.first)
                .arg(dead_fields::LAST_FAILURE)
                .arg(&h.last);
        }
        for (k, v) in &entry.fields {
            xadd.arg(k.as_slice()).arg(v.as_slice());
        }
        let (dead_id,): (String,) = redis::pipe()
            .atomic()
            .add_command(xadd)
            .cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&entry.id)
            .ignore()
            .cmd("HDEL")
            .arg(&self.errors)
            .arg(&entry.id)
            .ignore()
            .query_async(&mut conn)
            .await
            .with_context(|| format!("dead-lettering {} of {:?}", entry.id, self.stream))?;
        Ok(dead_id)
    }
}
