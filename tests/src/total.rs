//! Producing messages with unique ids to any deployment (one node,
//! Sentinel, Cluster; one partition or many) and counting what became of
//! each, like Jepsen's total-queue checker: lost (acknowledged to the
//! producer, never handled nor dead-lettered), duplicated, unexpected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use switchyard::config::Config;
use switchyard::redis::{Conn, Redis};
use switchyard::stream::Keys;

/// What a producer does.
#[derive(Debug, Clone)]
pub struct Production {
    /// Messages, ids `<prefix>-0` to `<prefix>-<n-1>`.
    pub messages: usize,
    /// Per second.
    pub rate: usize,
    /// Message types, one after the other.
    pub types: Vec<String>,
    pub id_prefix: String,
    /// After each write, wait for this many replicas (`WAIT`); a write they
    /// did not acknowledge within 500 ms is sent again.
    pub wait_replicas: u32,
}

/// What the producer saw.
#[derive(Debug, Clone, Default)]
pub struct Produced {
    /// Ids whose XADD Redis acknowledged (and, with `wait_replicas`, a
    /// replica too).
    pub acknowledged: BTreeSet<String>,
    /// Batches sent again after a failure.
    pub resent: usize,
    /// Messages per ingress stream.
    pub per_stream: BTreeMap<String, usize>,
}

/// CRC-32 (IEEE), the producer contract's partition hash.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The producer contract's rule: the list of ingress streams the hosts
/// publish, read once, and the stream of a message chosen by the CRC-32 of
/// its key.
pub async fn partition_streams(conn: &mut Conn, keys: &Keys) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed: redis::RedisResult<Vec<String>> = redis::cmd("LRANGE")
            .arg(keys.producer_list())
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await;
        if let Ok(l) = listed
            && !l.is_empty()
        {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no host wrote {} within 60 s",
            keys.producer_list()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces `p` through `redis`, keeping at it through failovers: a batch
/// that fails is sent again (which may add a message twice, a duplicate
/// the checker counts).
pub async fn produce(redis: Redis, keys: Keys, p: Production) -> Produced {
    let mut out = Produced::default();
    let mut conn = loop {
        match redis.connect().await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let streams = partition_streams(&mut conn, &keys).await;
    const BATCH: usize = 20;
    let started = Instant::now();
    let mut next = 0;
    while next < p.messages {
        let end = (next + BATCH).min(p.messages);
        let mut by_stream: BTreeMap<&str, Vec<(String, &String)>> = BTreeMap::new();
        for i in next..end {
            let id = format!("{}-{i}", p.id_prefix);
            let stream = &streams[crc32(id.as_bytes()) as usize % streams.len()];
            by_stream
                .entry(stream)
                .or_default()
                .push((id, &p.types[i % p.types.len()]));
        }
        let mut ok = true;
        for (stream, ids) in &by_stream {
            let mut pipe = redis::pipe();
            for (id, message_type) in ids {
                pipe.cmd("XADD")
                    .arg(*stream)
                    .arg("*")
                    .arg("type")
                    .arg(*message_type)
                    .arg("id")
                    .arg(id)
                    .arg("body")
                    .arg("{}")
                    .ignore();
            }
            let sent =
                tokio::time::timeout(Duration::from_secs(5), pipe.query_async::<()>(&mut conn))
                    .await;
            if !matches!(sent, Ok(Ok(()))) {
                ok = false;
                break;
            }
            if p.wait_replicas > 0 {
                let waited = conn
                    .wait_replicas(stream, p.wait_replicas, Duration::from_millis(500))
                    .await;
                if !matches!(waited, Ok(n) if n >= p.wait_replicas) {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            out.resent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        for (stream, ids) in by_stream {
            *out.per_stream.entry(stream.to_owned()).or_default() += ids.len();
            out.acknowledged.extend(ids.into_iter().map(|(id, _)| id));
        }
        next = end;
        let due = Duration::from_secs_f64(next as f64 / p.rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    out
}

/// Waits until nothing waits or is in flight in any stream of `config`
/// (every partition), at most `limit`; returns whether it got there.
pub async fn drained(redis: &Redis, config: &Config, limit: Duration) -> bool {
    let keys = Keys::of(config, redis.is_cluster());
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(mut conn) = redis.connect().await {
            let status = switchyard::admin::status::read(&mut conn, config, &keys, 0).await;
            if status.is_ok_and(|s| s.is_idle()) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The (queue, message id) of every dead letter of every partition.
pub async fn dead_letters_everywhere(
    redis: &Redis,
    config: &Config,
) -> Result<BTreeSet<(String, String)>> {
    let keys = Keys::of(config, redis.is_cluster());
    let mut conn = redis.connect().await?;
    let partitions = switchyard::admin::dead::partitions(&mut conn, config, &keys).await?;
    let found =
        switchyard::admin::dead::list(&mut conn, &partitions, &Default::default(), 0).await?;
    Ok(found.into_iter().map(|d| (d.queue, d.message_id)).collect())
}

/// What became of what was produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub acknowledged: usize,
    /// (queue, id) pairs handled at least once.
    pub handled: usize,
    pub dead_lettered: usize,
    /// Acknowledged, and for some queue neither handled nor dead-lettered.
    pub lost: Vec<(String, String)>,
    /// Handlings beyond the first, over all (queue, id).
    pub duplicates: usize,
    /// Handled ids that were never produced.
    pub unexpected: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acknowledged {}, handled {} (queue, id) pairs, dead-lettered {}, lost {}, duplicates {}, unexpected {}",
            self.acknowledged,
            self.handled,
            self.dead_lettered,
            self.lost.len(),
            self.duplicates,
            self.unexpected.len()
        )
    }
}

/// Counts, for each acknowledged id and each queue `queues` gives for it,
/// whether the hosts whose logs are `logs` handled it (the `recorder`
/// plugin's lines) or dead-lettered it.
pub fn check(
    acknowledged: &BTreeSet<String>,
    queues: impl Fn(&str) -> Vec<String>,
    logs: &[PathBuf],
    dead: &BTreeSet<(String, String)>,
    produced: impl Fn(&str) -> bool,
) -> Outcome {
    let handlings = crate::handlings(logs);
    let mut out = Outcome {
        acknowledged: acknowledged.len(),
        ..Default::default()
    };
    for id in acknowledged {
        for q in queues(id) {
            let key = (q, id.clone());
            if handlings.contains_key(&key) {
                out.handled += 1;
            } else if dead.contains(&key) {
                out.dead_lettered += 1;
            } else {
                out.lost.push(key);
            }
        }
    }
    out.duplicates = handlings.values().map(|n| n - 1).sum();
    out.unexpected = handlings
        .keys()
        .filter(|(_, id)| !produced(id))
        .map(|(_, id)| id.clone())
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_live_hosts_on_one_message_are_found() {
        let h = |host, begin, end| Handling {
            host,
            queue: "Q".into(),
            id: "m".into(),
            begin,
            end,
        };
        let deaths = BTreeMap::from([(0, 150)]);
        // Host 0 died at 150 during its handling; host 1 took over after.
        assert!(overlaps(&[h(0, 100, None), h(1, 200, Some(250))], &deaths).is_empty());
        // Host 1 began while host 0, alive, still handled it.
        assert_eq!(
            overlaps(&[h(0, 100, Some(300)), h(1, 200, Some(250))], &deaths).len(),
            1
        );
        // An unfinished handling of a live host lasts for ever.
        assert_eq!(
            overlaps(&[h(2, 100, None), h(1, 200, Some(250))], &deaths).len(),
            1
        );
        // One host twice, one after the other: no overlap.
        assert!(overlaps(&[h(1, 100, Some(150)), h(1, 200, Some(250))], &deaths).is_empty());
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        // The check value of CRC-32/ISO-HDLC, as zlib.crc32 gives it.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}

/// One handling of a message, from the `recorder` plugin's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handling {
    /// The index of the host's log.
    pub host: usize,
    pub queue: String,
    pub id: String,
    /// µs since the epoch.
    pub begin: u128,
    /// None: never finished (its host was killed during it).
    pub end: Option<u128>,
}

/// Every handling the logs record: finished ones, and begun ones that
/// never finished.
pub fn handlings_timed(logs: &[PathBuf]) -> Vec<Handling> {
    let mut all = Vec::new();
    for (host, log) in logs.iter().enumerate() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let field = |line: &str, name: &str| -> Option<String> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(|v| v.trim_matches('"').to_owned())
        };
        let mut begun = Vec::new();
        let mut finished = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.split("lease begin ").nth(1) {
                begun.push((
                    field(rest, "id=").unwrap_or_default(),
                    field(rest, "queue=").unwrap_or_default(),
                    field(rest, "at=").and_then(|t| t.parse().ok()).unwrap_or(0),
                ));
            } else if let Some(rest) = line.split("record id=").nth(1) {
                let rest = format!("id={rest}");
                let id = field(&rest, "id=").unwrap_or_default();
                let queue = field(&rest, "queue=").unwrap_or_default();
                let begin = field(&rest, "begin=")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let end = field(&rest, "end=").and_then(|t| t.parse().ok());
                finished.insert((id.clone(), queue.clone(), begin));
                all.push(Handling {
                    host,
                    queue,
                    id,
                    begin,
                    end,
                });
            }
        }
        for (id, queue, begin) in begun {
            if !finished.contains(&(id.clone(), queue.clone(), begin)) {
                all.push(Handling {
                    host,
                    queue,
                    id,
                    begin,
                    end: None,
                });
            }
        }
    }
    all
}

/// Pairs of handlings of one message by two hosts at once: each unfinished
/// one lasts until its host's death (`deaths`, µs since the epoch, by
/// host; a host still alive has none, and its unfinished handlings last
/// for ever).
pub fn overlaps(
    handlings: &[Handling],
    deaths: &BTreeMap<usize, u128>,
) -> Vec<(Handling, Handling)> {
    let mut by_message: BTreeMap<(&str, &str), Vec<&Handling>> = BTreeMap::new();
    for h in handlings {
        by_message.entry((&h.queue, &h.id)).or_default().push(h);
    }
    let until = |h: &Handling| {
        h.end
            .or_else(|| deaths.get(&h.host).copied())
            .unwrap_or(u128::MAX)
    };
    let mut found = Vec::new();
    for list in by_message.values() {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.host != b.host && a.begin.max(b.begin) < until(a).min(until(b)) {
                    found.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    found
}
