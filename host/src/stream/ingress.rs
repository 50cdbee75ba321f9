//! The router loop: reads the ingress stream through the consumer group and
//! fans each entry out to its queues, or dead-letters it, in one atomic step.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use redis::Value;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::{Entry, Keys, dead_fields, now_rfc3339, parse_entries, parse_read};
use crate::admin::metrics::Metrics;
use crate::failpoint;
use crate::redis_conn::{Backoff, Health};
use crate::router::{Decision, Router};

/// Acks each ingress entry and, only if that ack took it off the pending list
/// (no other router got there first), adds its copies. One script, so Redis
/// runs it as one step: a crash leaves either all of a batch done or none of
/// it, and an entry claimed by two routers is fanned out once.
///
/// KEYS[1]: ingress stream; KEYS[2..]: target streams.
/// ARGV: group, entry count, then per entry: ingress id, target count, the
/// targets' KEYS indexes, field count, fields.
const ROUTE_SCRIPT: &str = r#"
local group = ARGV[1]
local n = tonumber(ARGV[2])
local i = 3
local done = 0
for _ = 1, n do
  local id = ARGV[i]
  local nt = tonumber(ARGV[i + 1])
  i = i + 2
  local targets = {}
  for t = 1, nt do
    targets[t] = KEYS[tonumber(ARGV[i])]
    i = i + 1
  end
  local nf = tonumber(ARGV[i])
  i = i + 1
  local fields = {}
  for f = 1, nf do
    fields[f] = ARGV[i]
    i = i + 1
  end
  if redis.call('XACK', KEYS[1], group, id) == 1 then
    for t = 1, nt do
      redis.call('XADD', targets[t], '*', unpack(fields))
    end
    done = done + 1
  end
end
return done
"#;

/// How long one blocking read waits for new entries. Also bounds how long
/// shutdown waits for the router to notice.
const BLOCK: Duration = Duration::from_millis(500);

/// Reads the ingress stream and routes what it reads.
pub struct IngressRouter {
    /// Acks, claims and the route script.
    pub conn: ConnectionManager,
    /// Blocking reads only: a blocking XREADGROUP stalls every other command
    /// on its connection.
    pub reader: crate::redis_conn::Reader,
    pub keys: Keys,
    pub stream: String,
    pub consumer: String,
    pub batch: usize,
    pub visibility_timeout: Duration,
    pub router: Arc<arc_swap::ArcSwap<Router>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub on_missing_group: crate::config::MissingGroup,
}

impl std::fmt::Debug for IngressRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressRouter")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl IngressRouter {
    /// Routes until `cancel` fires. A batch that was read is always finished
    /// before the loop stops.
    pub async fn run(mut self, cancel: CancellationToken) {
        let script = redis::Script::new(ROUTE_SCRIPT);
        let mut claim_cursor = "0-0".to_string();
        let mut next_claim = tokio::time::Instant::now();
        let mut backoff = Backoff::default();
        while !cancel.is_cancelled() {
            let step = async {
                let now = tokio::time::Instant::now();
                let mut entries = Vec::new();
                if now >= next_claim {
                    let (cursor, claimed) = self.claim(&claim_cursor).await?;
                    if cursor == "0-0" {
                        next_claim = now + self.visibility_timeout / 4;
                    }
                    claim_cursor = cursor;
                    self.metrics
                        .router
                        .reclaimed
                        .fetch_add(claimed.len() as u64, Ordering::Relaxed);
                    entries = claimed;
                }
                if entries.is_empty() {
                    entries = self.read().await?;
                }
                if !entries.is_empty() {
                    self.route(&script, &entries).await?;
                }
                anyhow::Ok(())
            };
            match step.await {
                Ok(()) => {
                    backoff.reset();
                    self.health.ok();
                }
                Err(e) => {
                    self.health.failed("Routing", &e);
                    if crate::redis_conn::is_missing_group(&e) {
                        self.group_missing().await;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(backoff.delay()) => {}
                    }
                }
            }
        }
        tracing::info!(stream = %self.stream, "Router stopped.");
    }

    /// The ingress group is gone: said loudly, and recreated at the start of
    /// the stream only if the operator chose so.
    async fn group_missing(&mut self) {
        if self.on_missing_group == crate::config::MissingGroup::Stop {
            tracing::error!(stream = %self.stream, "The ingress consumer group is gone (did Redis lose its data?); not routing until an operator recreates it (host.on_missing_group = \"stop\").");
            return;
        }
        tracing::error!(stream = %self.stream, "The ingress consumer group is gone (did Redis lose its data?); recreating it at the start of the stream (host.on_missing_group = \"recreate\").");
        if let Err(e) = super::ensure_group(&mut self.conn, &self.stream, self.keys.group()).await {
            tracing::error!(stream = %self.stream, error = %format!("{e:#}"), "Recreating the ingress consumer group failed.");
        }
    }

    async fn read(&mut self) -> Result<Vec<Entry>> {
        let reply: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(self.keys.group())
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.batch)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(self.reader.get().await?)
            .await;
        match reply {
            Ok(reply) => parse_read(&reply),
            Err(e) => {
                self.reader.reset();
                Err(e).with_context(|| format!("reading ingress stream {:?}", self.stream))
            }
        }
    }

    /// Takes over entries another router read and never routed.
    async fn claim(&mut self, cursor: &str) -> Result<(String, Vec<Entry>)> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(self.keys.group())
            .arg(&self.consumer)
            .arg(self.visibility_timeout.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(self.batch)
            .query_async(&mut self.conn)
            .await
            .with_context(|| format!("claiming idle entries of {:?}", self.stream))?;
        let Value::Array(parts) = &reply else {
            anyhow::bail!("unexpected XAUTOCLAIM reply: {reply:?}");
        };
        let next = parts
            .first()
            .and_then(super::string)
            .unwrap_or_else(|| "0-0".into());
        let entries = parts
            .get(1)
            .map(parse_entries)
            .transpose()?
            .unwrap_or_default();
        if !entries.is_empty() {
            tracing::warn!(stream = %self.stream, count = entries.len(), "Took over ingress entries a stopped router left unrouted.");
        }
        Ok((next, entries))
    }

    async fn route(&mut self, script: &redis::Script, entries: &[Entry]) -> Result<()> {
        let router = self.router.load();
        let dead_key = self.keys.dead_letter();
        let mut keys: Vec<String> = vec![self.stream.clone()];
        let key_index = |key: String, keys: &mut Vec<String>| -> usize {
            match keys.iter().position(|k| *k == key) {
                Some(i) => i + 1,
                None => {
                    keys.push(key);
                    keys.len()
                }
            }
        };
        let mut inv = script.prepare_invoke();
        inv.arg(self.keys.group()).arg(entries.len());
        let mut routed = 0u64;
        let mut dead = 0u64;
        for entry in entries {
            inv.arg(&entry.id);
            match router.decide(&entry.id, &entry.fields) {
                Decision::Fanout {
                    message_id,
                    message_type,
                    queues,
                    fields,
                } => {
                    tracing::debug!(msg_id = %message_id, msg_type = %message_type, queues = ?queues, "Routing message.");
                    inv.arg(queues.len());
                    for q in &queues {
                        inv.arg(key_index(self.keys.queue_stream(q), &mut keys));
                    }
                    push_fields(&mut inv, &[], &fields);
                    routed += 1;
                }
                Decision::DeadLetter { reason } => {
                    tracing::warn!(entry_id = %entry.id, stream = %self.stream, reason = %reason, "Ingress entry dead-lettered.");
                    inv.arg(1).arg(key_index(dead_key.clone(), &mut keys));
                    let record = [
                        (dead_fields::REASON, reason.as_str()),
                        (dead_fields::QUEUE, ""),
                        (dead_fields::SOURCE, self.stream.as_str()),
                        (dead_fields::SOURCE_ID, entry.id.as_str()),
                        (dead_fields::ATTEMPTS, "0"),
                        (dead_fields::AT, &now_rfc3339()),
                    ];
                    push_fields(&mut inv, &record, &entry.fields);
                    dead += 1;
                }
            }
        }
        for k in &keys {
            inv.key(k);
        }
        failpoint::hit("router-before-commit");
        let done: u64 = inv
            .invoke_async(&mut self.conn)
            .await
            .with_context(|| format!("routing {} entries of {:?}", entries.len(), self.stream))?;
        failpoint::hit("router-after-commit");
        if done < entries.len() as u64 {
            tracing::info!(
                skipped = entries.len() as u64 - done,
                "Entries already routed by another router were skipped."
            );
        }
        self.metrics
            .router
            .routed
            .fetch_add(routed, Ordering::Relaxed);
        self.metrics
            .router
            .dead_lettered
            .fetch_add(dead, Ordering::Relaxed);
        Ok(())
    }
}

fn push_fields(
    inv: &mut redis::ScriptInvocation<'_>,
    extra: &[(&str, &str)],
    fields: &[(Vec<u8>, Vec<u8>)],
) {
    inv.arg((extra.len() + fields.len()) * 2);
    for (k, v) in extra {
        inv.arg(*k).arg(*v);
    }
    for (k, v) in fields {
        inv.arg(k.as_slice()).arg(v.as_slice());
    }
}
