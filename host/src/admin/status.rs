//! The state of every stream the host uses, read from Redis: what is waiting,
//! what is in flight, what is waiting for a retry, what was dead-lettered.

use std::fmt;

use anyhow::{Context, Result};
use redis::Value;
use redis::aio::ConnectionLike;

use crate::config::Config;
use crate::redis::reply::{Entry, info_field, info_pairs, parse_entries, string};
use crate::redis::scripts::{DEAD_PAGE, LAST_ID};
use crate::stream::{Keys, dead_fields};
use crate::text::{Escaped, bounded};

/// Bytes of a dead letter's reason `status` prints.
const SHOWN_REASON: usize = 300;

/// One stream and its consumer group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStatus {
    pub key: String,
    /// Entries in the stream (handled ones included until trimmed).
    pub length: u64,
    /// Entries never delivered to the group; `None` when Redis cannot tell.
    pub lag: Option<u64>,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Consumers known to the group.
    pub consumers: u64,
    /// Whether the group exists.
    pub group: bool,
}

/// A dead-letter record, summarised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub queue: String,
    pub message_type: String,
    pub message_id: String,
    pub attempts: String,
    pub reason: String,
    pub at: String,
}

/// Everything `switchyard status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    pub ingress: StreamStatus,
    pub queues: Vec<(String, StreamStatus, u64)>,
    pub dead_letters: u64,
    pub recent_dead_letters: Vec<DeadLetter>,
}

impl Status {
    /// True when nothing is waiting or in flight anywhere.
    pub fn is_idle(&self) -> bool {
        let idle = |s: &StreamStatus| s.pending == 0 && s.lag == Some(0);
        idle(&self.ingress) && self.queues.iter().all(|(_, s, _)| idle(s))
    }
}

/// Reads the status of every stream in `config`, and the last `recent` dead
/// letters.
pub async fn read<C: ConnectionLike>(
    conn: &mut C,
    config: &Config,
    recent: usize,
) -> Result<Status> {
    let keys = Keys::new(&config.host.prefix);
    let ingress = stream_status(conn, &config.ingress.stream, keys.group()).await?;
    let mut queues = Vec::new();
    for name in config.queues.keys() {
        let s = stream_status(conn, &keys.queue_stream(name), keys.group()).await?;
        let retrying: u64 = redis::cmd("HLEN")
            .arg(keys.errors(name))
            .query_async(conn)
            .await?;
        queues.push((name.clone(), s, retrying));
    }
    let dead = keys.dead_letter();
    let dead_letters: u64 = redis::cmd("XLEN").arg(&dead).query_async(conn).await?;
    // Summaries only: a dead letter may hold an entry of any size.
    let reply: Value = DEAD_PAGE
        .key(&dead)
        .arg("+")
        .arg("-")
        .arg(recent)
        .arg(SHOWN_REASON)
        .invoke_async(conn)
        .await?;
    let recent_dead_letters = parse_entries(&reply)?
        .iter()
        .map(DeadLetter::from_entry)
        .collect();
    Ok(Status {
        ingress,
        queues,
        dead_letters,
        recent_dead_letters,
    })
}

impl DeadLetter {
    pub fn from_entry(e: &Entry) -> Self {
        let get = |name: &str| {
            e.fields
                .iter()
                .find(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let message_type = Some(get("type"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| get("cap-msg-name"));
        let message_id = Some(get("id"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| get(dead_fields::SOURCE_ID));
        DeadLetter {
            id: e.id.clone(),
            queue: get(dead_fields::QUEUE),
            message_type,
            message_id,
            attempts: get(dead_fields::ATTEMPTS),
            reason: get(dead_fields::REASON),
            at: get(dead_fields::AT),
        }
    }
}

async fn stream_status<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    group: &str,
) -> Result<StreamStatus> {
    let length: u64 = redis::cmd("XLEN").arg(key).query_async(conn).await?;
    let mut status = StreamStatus {
        key: key.to_owned(),
        length,
        lag: Some(0),
        ..Default::default()
    };
    let groups: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await;
    let groups = match groups {
        Ok(v) => v,
        // No such stream yet: nothing waiting.
        Err(e) if e.code() == Some("ERR") => return Ok(status),
        Err(e) => return Err(e).with_context(|| format!("XINFO GROUPS {key}")),
    };
    let Value::Array(groups) = groups else {
        return Ok(status);
    };
    for g in groups {
        let pairs = info_pairs(&g);
        let field = |name: &str| info_field(&pairs, name);
        if field("name").and_then(string).as_deref() != Some(group) {
            continue;
        }
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => Some(*i as u64),
            _ => None,
        };
        status.group = true;
        status.pending = int(field("pending")).unwrap_or(0);
        status.consumers = int(field("consumers")).unwrap_or(0);
        status.lag = int(field("lag"));
        // Redis 7.0 can miscount `lag` after an AOF reload; what is certain is
        // that nothing waits once the group has read up to the last entry.
        if let Some(last) = field("last-delivered-id").and_then(string) {
            let newest: Option<String> = LAST_ID.key(key).invoke_async(conn).await?;
            if newest.is_none_or(|id| id == last) {
                status.lag = Some(0);
            }
        }
    }
    Ok(status)
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lag = |s: &StreamStatus| s.lag.map_or("?".to_string(), |l| l.to_string());
        writeln!(
            f,
            "{:<14} {:<34} {:>8} {:>8} {:>8} {:>9}",
            "QUEUE", "STREAM", "LENGTH", "WAITING", "PENDING", "RETRYING"
        )?;
        writeln!(
            f,
            "{:<14} {:<34} {:>8} {:>8} {:>8} {:>9}",
            "(ingress)",
            self.ingress.key,
            self.ingress.length,
            lag(&self.ingress),
            self.ingress.pending,
            "-"
        )?;
        for (name, s, retrying) in &self.queues {
            writeln!(
                f,
                "{:<14} {:<34} {:>8} {:>8} {:>8} {:>9}",
                name,
                s.key,
                s.length,
                lag(s),
                s.pending,
                retrying
            )?;
        }
        writeln!(f, "\nDead letters: {}", self.dead_letters)?;
        for d in &self.recent_dead_letters {
            // Producers and plugins chose these texts: cut and escaped, so
            // they can neither flood the terminal nor forge a line.
            let cut = |t: &str| bounded(t, SHOWN_REASON);
            writeln!(
                f,
                "  {}  queue={} type={} id={} attempts={}\n      reason: {}",
                d.id,
                if d.queue.is_empty() {
                    "(router)"
                } else {
                    &d.queue
                },
                Escaped(&cut(&d.message_type)),
                Escaped(&cut(&d.message_id)),
                d.attempts,
                Escaped(&cut(&d.reason))
            )?;
        }
        Ok(())
    }
}
