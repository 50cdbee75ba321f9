//! Benchmark: the same host on each kind of Redis deployment, in one run,
//! on the same machine: one node (one partition, and six), a Redis Cluster
//! of three masters with a replica each (six partitions), and a master with
//! a replica under Sentinel, with `redis.wait_replicas` 0 and 1. Each
//! drains a pre-filled backlog, written by the producer contract's rule
//! (each message to the partition of its key's CRC-32), with the native
//! no-op handler and the no-op plugin; beside the raw rate of pipelined
//! XADD on each. Every server and the host share the machine's cores: on
//! two cores a cluster's six redis-server processes compete with the host
//! for them, so what is measured is the cost of the deployment's path, not
//! what it would scale to on machines of its own (see BENCHMARKS.md).
//!
//!     ./scripts/build-plugins.sh
//!     cargo run --release -p switchyard-bench --bin deployments

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use switchyard::redis::Conn;
use switchyard::stream::Keys;
use switchyard::supervisor::RunningHost;
use switchyard_bench::{Handler, MESSAGE_TYPE, handled, rate, spread};
use switchyard_tests::TestConfig;
use switchyard_tests::ha::{Cluster, SentinelSet};
use switchyard_tests::total::crc32;

#[derive(Debug, Parser)]
struct Args {
    /// Messages per run.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Handler concurrency of the queue.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Rounds of each case; the figure is the median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only the cases whose label contains this (e.g. `Sentinel`).
    #[arg(long)]
    only: Option<String>,
}

fn config(
    handler: Handler,
    concurrency: u32,
    partitions: usize,
    wait: u32,
    queues: &[&str],
) -> TestConfig {
    let plugin = match handler {
        Handler::Native => "builtin:noop",
        _ => "@PLUGINS@/noop.wasm",
    };
    let list: Vec<String> = queues.iter().map(|q| format!("{q:?}")).collect();
    let mut text = format!(
        "[host]\nprefix = \"@PREFIX@\"\nshutdown_timeout = \"5s\"\n\
         [ingress]\nstream = \"@PREFIX@:ingress\"\nbatch = 512\npartitions = {partitions}\n\
         [redis]\nwait_replicas = {wait}\nwait_timeout = \"1s\"\n\
         [routes]\n\"{MESSAGE_TYPE}\" = [{}]\n",
        list.join(", ")
    );
    for q in queues {
        text.push_str(&format!(
            "[queues.{q}]\nplugin = \"{plugin}\"\nconcurrency = {concurrency}\n"
        ));
    }
    TestConfig::new(&text)
}

/// Writes `n` messages, each to the partition of its id's CRC-32, 256 to a
/// pipeline per partition; returns how long it took.
async fn fill(conn: &mut Conn, streams: &[String], n: usize) -> Result<Duration> {
    let started = Instant::now();
    let mut per: Vec<Vec<usize>> = vec![Vec::new(); streams.len()];
    for i in 0..n {
        per[crc32(i.to_string().as_bytes()) as usize % streams.len()].push(i);
    }
    for (stream, ids) in streams.iter().zip(&per) {
        for chunk in ids.chunks(256) {
            let mut pipe = redis::pipe();
            for i in chunk {
                pipe.cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("type")
                    .arg(MESSAGE_TYPE)
                    .arg("id")
                    .arg(i)
                    .arg("body")
                    .arg(r#"{"SiteId":1}"#)
                    .ignore();
            }
            pipe.query_async::<()>(conn).await?;
        }
    }
    Ok(started.elapsed())
}

/// CPU seconds the redis-server processes on `ports` have used.
fn redis_cpu(ports: &[u16]) -> f64 {
    ports
        .iter()
        .filter_map(|p| switchyard_tests::ha::cli(*p, &[], &["INFO", "cpu"]).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum()
}

/// CPU seconds this process (the host in it) has used.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime, the 14th and 15th fields, in clock ticks (100 a
    // second on Linux).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// What one drain measured.
struct Drained {
    xadd: f64,
    rate: f64,
    /// µs of CPU per message of the masters, the replicas (producer's XADD
    /// included).
    masters_us: f64,
    replicas_us: f64,
    /// µs of the host's CPU per message.
    host_us: f64,
}

/// One drain: fills the backlog, runs a host until it is handled.
async fn drain(
    url: &str,
    cluster: bool,
    (masters, replicas): (Vec<u16>, Vec<u16>),
    cfg: &TestConfig,
    n: usize,
) -> Result<Drained> {
    let redis = switchyard_tests::deployment(url, &cfg.config);
    let mut conn = redis.connect().await?;
    let keys = Keys::of(&cfg.config, cluster);
    let streams: Vec<String> = keys
        .partitions(cfg.config.ingress.partitions)
        .into_iter()
        .map(|p| p.ingress)
        .collect();
    let before = (redis_cpu(&masters), redis_cpu(&replicas));
    let xadd = rate(n, fill(&mut conn, &streams, n).await?);
    let host_before = own_cpu();
    let started = Instant::now();
    let host = RunningHost::start(
        cfg.config.clone(),
        redis.clone(),
        switchyard::plugin::Compiler::this_program()?,
    );
    let copies = (n * cfg.config.queues.len()) as u64;
    while handled(&host) < copies {
        if started.elapsed() > Duration::from_secs(900) || host.is_finished() {
            bail!("only {} of {copies} copies handled", handled(&host));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let host_cpu = own_cpu() - host_before;
    host.stop().await?;
    let per_message = |cpu: f64| cpu * 1e6 / n as f64;
    Ok(Drained {
        xadd,
        rate: rate(n, elapsed),
        masters_us: per_message(redis_cpu(&masters) - before.0),
        replicas_us: per_message(redis_cpu(&replicas) - before.1),
        host_us: host_cpu * 1e6 / n as f64,
    })
}

/// Where a case runs.
enum Place {
    Node(Box<switchyard_tests::Redis>),
    Cluster(Cluster),
    Sentinel(SentinelSet),
}

impl Place {
    fn url(&self) -> String {
        match self {
            Place::Node(r) => r.url().to_owned(),
            Place::Cluster(c) => c.url(),
            Place::Sentinel(s) => s.url(),
        }
    }

    fn cluster(&self) -> bool {
        matches!(self, Place::Cluster(_))
    }

    /// The data nodes' ports: the masters', the replicas'.
    fn ports(&self) -> (Vec<u16>, Vec<u16>) {
        let all: Vec<u16> = match self {
            Place::Node(r) => r
                .url()
                .trim_end_matches('/')
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .into_iter()
                .collect(),
            Place::Cluster(c) => c.nodes.iter().map(|n| n.port).collect(),
            Place::Sentinel(s) => s.nodes.iter().map(|n| n.port).collect(),
        };
        all.into_iter().partition(|p| {
            switchyard_tests::ha::cli(*p, &[], &["ROLE"]).is_ok_and(|r| r.starts_with("master"))
        })
    }
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<std::process::ExitCode> {
    if let Some(code) = switchyard::plugin::compile::serve_if_asked() {
        return Ok(code);
    }
    tokio::runtime::Runtime::new()?.block_on(run())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run() -> Result<()> {
    let a = Args::parse();
    let n = a.messages;
    let node = Place::Node(Box::new(switchyard_tests::Redis::start()));
    let cluster = Place::Cluster(Cluster::start(3, 1)?);
    let sentinel = Place::Sentinel(SentinelSet::start(1, 3)?);
    let one: &[&str] = &["Work"];
    let six: &[&str] = switchyard_tests::CHAT_ENDED_QUEUES;
    let cases: [(&str, &Place, usize, u32, &[&str]); 7] = [
        ("one node, 1 partition", &node, 1, 0, one),
        (
            "one node, 1 partition, fan-out to 6 queues",
            &node,
            1,
            0,
            six,
        ),
        ("one node, 6 partitions", &node, 6, 0, one),
        (
            "cluster of 3 masters + 3 replicas, 6 partitions",
            &cluster,
            6,
            0,
            one,
        ),
        (
            "cluster, 6 partitions, fan-out to 6 queues",
            &cluster,
            6,
            0,
            six,
        ),
        (
            "Sentinel master + 1 replica, wait_replicas 0",
            &sentinel,
            1,
            0,
            one,
        ),
        (
            "Sentinel master + 1 replica, wait_replicas 1",
            &sentinel,
            1,
            1,
            one,
        ),
    ];
    println!(
        "machine: {} cores, every redis-server and the host on them; {n} messages a run, concurrency {}, median of {} rounds",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.concurrency,
        a.rounds
    );
    let mut baseline = [0.0f64; 2];
    for (label, place, partitions, wait, queues) in cases {
        if a.only.as_ref().is_some_and(|o| !label.contains(o.as_str())) {
            continue;
        }
        for (h, handler) in [Handler::Native, Handler::Wasm].into_iter().enumerate() {
            let mut xadds = Vec::new();
            let mut drains = Vec::new();
            let mut masters_us = Vec::new();
            let mut replicas_us = Vec::new();
            let mut host_us = Vec::new();
            for _ in 0..a.rounds {
                let cfg = config(handler, a.concurrency, partitions, wait, queues);
                let d = drain(&place.url(), place.cluster(), place.ports(), &cfg, n).await?;
                xadds.push(d.xadd);
                drains.push(d.rate);
                masters_us.push(d.masters_us);
                replicas_us.push(d.replicas_us);
                host_us.push(d.host_us);
            }
            let d = switchyard_bench::median(drains.clone());
            if baseline[h] == 0.0 {
                baseline[h] = d;
            }
            // Messages, not copies: a fan-out's ratio is to one node's
            // one-route rate.
            println!(
                "{label:<50} {:<6} drain {:>22}/s ({:.3} of one node); XADD {}/s; CPU per message: masters {:.1} µs, replicas {:.1} µs, host {:.1} µs",
                if handler == Handler::Native {
                    "native"
                } else {
                    "wasm"
                },
                spread(&drains),
                d / baseline[h],
                spread(&xadds),
                switchyard_bench::median(masters_us),
                switchyard_bench::median(replicas_us),
                switchyard_bench::median(host_us),
            );
        }
    }
    Ok(())
}
