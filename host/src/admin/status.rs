//! The state of every stream the host uses, read from Redis: what is waiting,
//! what is in flight, what is waiting for a retry, what was dead-lettered.

use std::fmt;

use anyhow::Result;
use redis::Value;
use redis::aio::ConnectionLike;

use crate::config::Config;
use crate::redis::reply::{Entry, parse_entries};
use crate::redis::scripts::DEAD_PAGE;
pub use crate::stream::inspect::StreamStatus;
use crate::stream::inspect::stream_status;
use crate::stream::registry::{self, State};
use crate::stream::{Keys, Partition, dead_fields};
use crate::text::{Escaped, bounded};

/// Bytes of a dead letter's reason `status` prints.
const SHOWN_REASON: usize = 300;

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

/// One partition's streams.
#[derive(Debug, Clone)]
pub struct PartitionStatus {
    pub id: String,
    pub state: State,
    pub ingress: StreamStatus,
    /// Each queue's stream in this partition, and how many of its messages
    /// wait for a retry.
    pub queues: Vec<(String, StreamStatus, u64)>,
    pub dead_letters: u64,
}

/// Everything `switchyard status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    /// Every partition, in order.
    pub partitions: Vec<PartitionStatus>,
    /// The ingress, summed over the partitions.
    pub ingress: StreamStatus,
    /// Each queue, summed over the partitions.
    pub queues: Vec<(String, StreamStatus, u64)>,
    pub dead_letters: u64,
    /// The newest dead letters of every partition, newest first.
    pub recent_dead_letters: Vec<DeadLetter>,
}

impl Status {
    /// True when nothing is waiting or in flight anywhere.
    pub fn is_idle(&self) -> bool {
        self.ingress.is_idle() && self.queues.iter().all(|(_, s, _)| s.is_idle())
    }
}

/// Adds `s` to `sum`: counts added; the lag unknown if either is; the
/// group there only if in both.
fn add(sum: &mut StreamStatus, s: &StreamStatus) {
    sum.length += s.length;
    sum.lag = sum.lag.zip(s.lag).map(|(a, b)| a + b);
    sum.pending += s.pending;
    sum.consumers = sum.consumers.max(s.consumers);
    sum.group &= s.group;
}

/// Reads the status of every stream of every partition of `config`, and
/// the last `recent` dead letters.
pub async fn read<C: ConnectionLike>(
    conn: &mut C,
    config: &Config,
    keys: &Keys,
    recent: usize,
) -> Result<Status> {
    let known = registry::known_with(conn, keys, config.ingress.partitions).await?;
    let many = known.len() > 1;
    let total = |key: String| StreamStatus {
        key,
        lag: Some(0),
        group: true,
        ..Default::default()
    };
    let summed_key = |one: String| {
        if many {
            format!("({} partitions)", known.len())
        } else {
            one
        }
    };
    let first = keys.first();
    let mut ingress = total(summed_key(first.ingress.clone()));
    let mut queues: Vec<(String, StreamStatus, u64)> = config
        .queues
        .keys()
        .map(|q| (q.clone(), total(summed_key(first.queue_stream(q))), 0))
        .collect();
    let mut partitions = Vec::new();
    let mut dead_letters = 0;
    let mut recent_dead_letters = Vec::new();
    for k in &known {
        let p = &k.partition;
        let i = stream_status(conn, &p.ingress, keys.group()).await?;
        add(&mut ingress, &i);
        let mut own = Vec::new();
        for (name, sum, retrying_sum) in &mut queues {
            let s = stream_status(conn, &p.queue_stream(name), keys.group()).await?;
            let retrying: u64 = redis::cmd("HLEN")
                .arg(p.errors(name))
                .query_async(conn)
                .await?;
            add(sum, &s);
            *retrying_sum += retrying;
            own.push((name.clone(), s, retrying));
        }
        let dead = p.dead_letter();
        let count: u64 = redis::cmd("XLEN").arg(&dead).query_async(conn).await?;
        dead_letters += count;
        if recent > 0 && count > 0 {
            // Summaries only: a dead letter may hold an entry of any size.
            let reply: Value = DEAD_PAGE
                .key(&dead)
                .arg("+")
                .arg("-")
                .arg(recent)
                .arg(SHOWN_REASON)
                .invoke_async(conn)
                .await?;
            recent_dead_letters.extend(
                parse_entries(&reply)?
                    .iter()
                    .map(|e| DeadLetter::from_entry_in(e, p)),
            );
        }
        partitions.push(PartitionStatus {
            id: p.id().to_owned(),
            state: k.state,
            ingress: i,
            queues: own,
            dead_letters: count,
        });
    }
    // Newest first over every partition: dead-letter ids are times.
    recent_dead_letters.sort_by_key(|d| std::cmp::Reverse(entry_time(&d.id)));
    recent_dead_letters.truncate(recent);
    Ok(Status {
        partitions,
        ingress,
        queues,
        dead_letters,
        recent_dead_letters,
    })
}

/// The time and sequence of an entry id (`<ms>-<seq>`, perhaps followed by
/// `@<partition>`), for ordering ids of several streams.
pub fn entry_time(id: &str) -> (u64, u64) {
    let (entry, _) = crate::stream::layout::split_dead_letter_ref(id);
    let (ms, seq) = entry.split_once('-').unwrap_or((entry, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl DeadLetter {
    /// A dead letter of `partition`'s dead-letter stream, its id as
    /// operators give it.
    pub fn from_entry_in(e: &Entry, partition: &Partition) -> Self {
        DeadLetter {
            id: partition.dead_letter_ref(&e.id),
            ..Self::from_entry(e)
        }
    }

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
        if self.partitions.len() > 1 {
            writeln!(
                f,
                "\n{:<14} {:<34} {:>8} {:>8} {:>8} {:>8}",
                "PARTITION", "INGRESS", "WAITING", "PENDING", "QUEUED", "DEAD"
            )?;
            for p in &self.partitions {
                // Waiting and in flight over the partition's queues.
                let queued: u64 = p
                    .queues
                    .iter()
                    .map(|(_, s, _)| s.lag.unwrap_or(0) + s.pending)
                    .sum();
                let state = match p.state {
                    State::Active => String::new(),
                    other => format!(" ({})", other.as_str()),
                };
                writeln!(
                    f,
                    "{:<14} {:<34} {:>8} {:>8} {:>8} {:>8}",
                    format!("{}{state}", p.id),
                    p.ingress.key,
                    lag(&p.ingress),
                    p.ingress.pending,
                    queued,
                    p.dead_letters
                )?;
            }
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
