//! The chaos harness: produce messages with unique ids, kill the host with
//! SIGKILL again and again, kill redis-server (AOF, `appendfsync always`)
//! too, drain, and count like Jepsen's total-queue checker.
//!
//! Handlings are recorded by the `recorder` plugin, in each host's log file,
//! outside the host: a message id handled twice shows up twice even if the
//! host that handled it died before it could acknowledge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{HostProcess, TestConfig, lag, pending, plugin_dir};

/// What to do.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Messages to produce.
    pub messages: usize,
    /// Times to SIGKILL the host.
    pub host_kills: usize,
    /// Times to SIGKILL redis-server.
    pub redis_kills: usize,
    /// Seed of the kill schedule.
    pub seed: u64,
    /// Messages produced per second (the run lasts about messages / rate).
    pub rate: usize,
}

/// What the checker counted.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub produced: usize,
    /// Ids whose XADD Redis acknowledged.
    pub acknowledged: usize,
    /// Acknowledged ids handled at least once.
    pub handled: usize,
    /// Acknowledged ids dead-lettered (never handled).
    pub dead_lettered: usize,
    /// Acknowledged, and neither handled nor dead-lettered.
    pub lost: Vec<String>,
    /// Handlings beyond the first, over all ids.
    pub duplicates: usize,
    /// The most times one id was handled.
    pub max_handlings: usize,
    /// Handled ids that were never produced.
    pub unexpected: Vec<String>,
    /// Entries still pending in any group at the end.
    pub pending_left: u64,
    pub host_kills: usize,
    pub redis_kills: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "produced {}, acknowledged {}, handled {}, dead-lettered {}, lost {}, duplicates {} (max {} handlings of one id), unexpected {}, pending left {}; {} host kills, {} redis kills, {:.1} s",
            self.produced,
            self.acknowledged,
            self.handled,
            self.dead_lettered,
            self.lost.len(),
            self.duplicates,
            self.max_handlings,
            self.unexpected.len(),
            self.pending_left,
            self.host_kills,
            self.redis_kills,
            self.elapsed.as_secs_f64()
        )
    }
}

/// A small deterministic generator for the kill schedule.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next() % span)
    }
}

/// A redis-server that persists every write before answering, and that the
/// harness kills and restarts on the same port and data.
pub type DurableRedis = crate::RedisServer;

fn chaos_config() -> TestConfig {
    TestConfig::new(&format!(
        r#"
[ingress]
stream = "@PREFIX@:ingress"
batch = 256
visibility_timeout = "2s"

[routes]
"record" = ["Record"]

[queues.Record]
plugin = "{plugins}/recorder.wasm"
concurrency = 16
handler_timeout = "2s"
visibility_timeout = "3s"
max_attempts = 1000
retry_delay = "100ms"
"#,
        plugins = plugin_dir().display()
    ))
}

/// Produces `n` messages at `rate` per second, retrying each batch until
/// Redis acknowledges it (an XADD whose reply was lost may have been applied:
/// the message is then in the stream twice, which the checker counts as
/// duplicates). Returns the acknowledged ids.
async fn produce(url: String, stream: String, n: usize, rate: usize) -> BTreeSet<String> {
    let client = redis::Client::open(url).expect("redis url");
    let mut acknowledged = BTreeSet::new();
    const BATCH: usize = 50;
    let started = Instant::now();
    let mut conn = None;
    let mut next = 0;
    while next < n {
        let end = (next + BATCH).min(n);
        let mut pipe = redis::pipe();
        for i in next..end {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("type")
                .arg("record")
                .arg("id")
                .arg(format!("m-{i}"))
                .arg("body")
                .arg("{}");
        }
        if conn.is_none() {
            conn = client.get_multiplexed_async_connection().await.ok();
        }
        let sent = match &mut conn {
            Some(c) => pipe.query_async::<Vec<String>>(c).await.is_ok(),
            None => false,
        };
        if !sent {
            conn = None;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        for i in next..end {
            acknowledged.insert(format!("m-{i}"));
        }
        next = end;
        // Keep to the rate.
        let due = Duration::from_secs_f64(next as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    acknowledged
}

/// Counts `record id=...` lines in every host log.
fn read_handlings(logs: &[PathBuf]) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for ((_, id), n) in crate::handlings(logs) {
        *counts.entry(id).or_insert(0) += n;
    }
    Ok(counts)
}

/// Runs the chaos schedule and checks the result.
pub async fn run(opts: &ChaosOptions) -> Result<ChaosReport> {
    crate::plugin("recorder");
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!(
        "switchyard-chaos-{}-{}",
        std::process::id(),
        opts.seed
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut redis = DurableRedis::durable(&dir)?;
    let cfg = chaos_config();
    let mut rng = XorShift(opts.seed.max(1));
    let mut logs = Vec::new();
    let spawn = |logs: &mut Vec<PathBuf>, url: &str| -> Result<HostProcess> {
        let log = dir.join(format!("host-{}.log", logs.len()));
        let host = HostProcess::spawn_logged(&cfg, url, &log)?;
        logs.push(log);
        Ok(host)
    };

    let producer = tokio::spawn(produce(
        redis.url(),
        cfg.ingress().to_owned(),
        opts.messages,
        opts.rate,
    ));
    let run_for = Duration::from_secs_f64(opts.messages as f64 / opts.rate as f64);
    // Spread the host kills over the production, and the redis kills
    // between them.
    let mean = run_for / (opts.host_kills as u32 + 1);
    let mut redis_kills_at: BTreeSet<usize> = BTreeSet::new();
    while redis_kills_at.len() < opts.redis_kills.min(opts.host_kills) {
        redis_kills_at.insert((rng.next() % opts.host_kills.max(1) as u64) as usize);
    }
    let mut report = ChaosReport::default();
    for k in 0..opts.host_kills {
        let mut host = spawn(&mut logs, &redis.url())?;
        tokio::time::sleep(rng.between(mean / 2, mean * 3 / 2)).await;
        if redis_kills_at.contains(&k) {
            redis.kill9();
            report.redis_kills += 1;
            tokio::time::sleep(rng.between(Duration::from_millis(200), Duration::from_millis(800)))
                .await;
            redis.restart()?;
            tokio::time::sleep(rng.between(Duration::from_millis(100), mean)).await;
        }
        host.kill9();
        report.host_kills += 1;
    }
    let acknowledged = producer.await?;

    // A last host drains everything.
    let mut host = spawn(&mut logs, &redis.url())?;
    let client = redis::Client::open(redis.url())?;
    let mut conn = crate::connect(&client).await;
    let queue = cfg.queue_stream("Record");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let p = pending(&mut conn, cfg.ingress(), &cfg.prefix).await
            + pending(&mut conn, &queue, &cfg.prefix).await;
        let l = lag(&mut conn, cfg.ingress(), &cfg.prefix)
            .await
            .unwrap_or(1)
            + lag(&mut conn, &queue, &cfg.prefix).await.unwrap_or(1);
        if p == 0 && l == 0 {
            break;
        }
        if Instant::now() > deadline {
            report.pending_left = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.signal("TERM");
    host.wait(Duration::from_secs(30))?;

    let handlings = read_handlings(&logs)?;
    let dead: BTreeSet<String> = crate::entries(&mut conn, &cfg.dead_stream())
        .await
        .iter()
        .filter_map(|e| crate::field(e, "id"))
        .collect();
    report.produced = opts.messages;
    report.acknowledged = acknowledged.len();
    report.handled = acknowledged
        .iter()
        .filter(|id| handlings.contains_key(*id))
        .count();
    report.dead_lettered = acknowledged
        .iter()
        .filter(|id| !handlings.contains_key(*id) && dead.contains(*id))
        .count();
    report.lost = acknowledged
        .iter()
        .filter(|id| !handlings.contains_key(*id) && !dead.contains(*id))
        .cloned()
        .collect();
    report.duplicates = handlings.values().map(|n| n - 1).sum();
    report.max_handlings = handlings.values().copied().max().unwrap_or(0);
    report.unexpected = handlings
        .keys()
        .filter(|id| {
            !id.starts_with("m-")
                || id[2..]
                    .parse::<usize>()
                    .map_or(true, |i| i >= opts.messages)
        })
        .cloned()
        .collect();
    report.elapsed = started.elapsed();
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}
