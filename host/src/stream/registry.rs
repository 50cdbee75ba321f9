//! The record of every partition a deployment has used, in Redis (a hash:
//! ingress stream to tag, state and since when), so that a change of
//! `ingress.partitions` loses nothing.
//!
//! - A host that starts, or reloads a changed count, records its
//!   partitions as `active` and writes their ingress streams, in order, to
//!   the list producers read.
//! - A recorded partition outside that count is `retired`: every host keeps
//!   reading it (its router and its queues) until its ingress stream and
//!   every queue stream of it have nothing unread and nothing pending; it is
//!   then `drained`, and read no more.
//! - A drained partition that gains an entry again (a producer that still
//!   writes to it, a dead letter replayed into it) is `retired` again, and
//!   read until drained.
//!
//! Its dead letters stay where they are, found by `switchyard dead` and the
//! dashboard through this record.

use std::collections::BTreeMap;

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

use super::{Keys, Partition, now_rfc3339};
use crate::redis::scripts::DRAINED;
use crate::redis::{Doing, StreamResult};

/// Where a partition is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// In the count some host runs with.
    Active,
    /// Out of it, and still read until nothing is left in it.
    Retired,
    /// Out of it, and empty: no longer read.
    Drained,
}

impl State {
    /// As the record, `status` and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Retired => "retired",
            State::Drained => "drained",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    ingress: String,
    state: State,
    since: String,
}

/// A partition as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub partition: Partition,
    /// Where it is in its life, as last recorded.
    pub state: State,
    /// When it entered that state (RFC 3339).
    pub since: String,
}

/// Every partition recorded, partition 0 first, then by tag.
pub async fn read<C: ConnectionLike>(conn: &mut C, keys: &Keys) -> StreamResult<Vec<Known>> {
    let all: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.registry())
        .query_async(conn)
        .await
        .doing(|| format!("reading the partitions recorded in {:?}", keys.registry()))?;
    let mut known: Vec<Known> = all
        .into_iter()
        .filter_map(|(tag, record)| {
            // A record the host did not write is left alone.
            let record: Record = serde_json::from_str(&record).ok()?;
            Some(Known {
                partition: keys.tagged(&tag),
                state: record.state,
                since: record.since,
            })
        })
        .collect();
    known.sort_by_key(|k| (!k.partition.is_first(), k.partition.id().to_owned()));
    Ok(known)
}

/// Records `partition` as being in `state` now.
pub async fn set<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    partition: &Partition,
    state: State,
) -> StreamResult<()> {
    let record = Record {
        ingress: partition.ingress.clone(),
        state,
        since: now_rfc3339(),
    };
    let text = serde_json::to_string(&record).expect("a record serializes");
    redis::cmd("HSET")
        .arg(keys.registry())
        .arg(partition.registry_tag())
        .arg(text)
        .query_async::<()>(conn)
        .await
        .doing(|| format!("recording partition {}", partition.id()))
}

/// Records `active` as the partitions in use and every other recorded
/// active one as retired, writes the producers' list when it differs, and
/// returns every partition recorded.
pub async fn register<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    active: &[Partition],
) -> StreamResult<Vec<Known>> {
    let before = read(conn, keys).await?;
    for p in active {
        let was = before.iter().find(|k| k.partition == *p).map(|k| k.state);
        if was != Some(State::Active) {
            set(conn, keys, p, State::Active).await?;
        }
    }
    for k in &before {
        if k.state == State::Active && !active.contains(&k.partition) {
            tracing::info!(event = "partition_retired", partition = %k.partition.id(), ingress = %k.partition.ingress, "A partition is no longer in ingress.partitions: it is read until it is drained.");
            set(conn, keys, &k.partition, State::Retired).await?;
        }
    }
    let names: Vec<&str> = active.iter().map(|p| p.ingress.as_str()).collect();
    let listed: Vec<String> = redis::cmd("LRANGE")
        .arg(keys.producer_list())
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .doing(|| format!("reading {:?}", keys.producer_list()))?;
    if listed != names {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(keys.producer_list())
            .ignore()
            .cmd("RPUSH")
            .arg(keys.producer_list())
            .arg(&names)
            .ignore();
        pipe.query_async::<()>(conn)
            .await
            .doing(|| format!("writing {:?}", keys.producer_list()))?;
    }
    read(conn, keys).await
}

/// Whether nothing of `partition` is left to read or in flight: its
/// ingress stream and each of `queues`' streams, looked at in one step.
pub async fn is_drained<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    partition: &Partition,
    queues: &[String],
) -> StreamResult<bool> {
    let mut inv = DRAINED.key(&partition.ingress);
    for q in queues {
        inv.key(partition.queue_stream(q));
    }
    inv.arg(keys.group());
    let drained: i64 = inv
        .invoke_async(conn)
        .await
        .doing(|| format!("looking whether partition {} is drained", partition.id()))?;
    Ok(drained == 1)
}

/// The `n` partitions a configuration asks for, then every other one
/// recorded: what `status`, `dead` and the dashboard look at.
pub async fn known_with<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    n: usize,
) -> StreamResult<Vec<Known>> {
    let recorded = read(conn, keys).await?;
    let mut all: Vec<Known> = keys
        .partitions(n)
        .into_iter()
        .map(|p| {
            recorded
                .iter()
                .find(|k| k.partition == p)
                .cloned()
                .unwrap_or(Known {
                    partition: p,
                    state: State::Active,
                    since: String::new(),
                })
        })
        .collect();
    for k in recorded {
        if !all.iter().any(|a| a.partition == k.partition) {
            all.push(k);
        }
    }
    Ok(all)
}
