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
}

fn config(handler: Handler, concurrency: u32, partitions: usize, wait: u32) -> TestConfig {
    let plugin = match handler {
        Handler::Native => "builtin:noop",
        _ => "@PLUGINS@/noop.wasm",
    };
    TestConfig::new(&format!(
        "[host]\nprefix = \"@PREFIX@\"\nshutdown_timeout = \"5s\"\n\
         [ingress]\nstream = \"@PREFIX@:ingress\"\nbatch = 512\npartitions = {partitions}\n\
         [redis]\nwait_replicas = {wait}\nwait_timeout = \"1s\"\n\
         [routes]\n\"{MESSAGE_TYPE}\" = [\"Work\"]\n\
         [queues.Work]\nplugin = \"{plugin}\"\nconcurrency = {concurrency}\n"
    ))
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

/// One drain: fills the backlog, runs a host until it is handled; returns
/// (XADD rate, drain rate).
async fn drain(url: &str, cluster: bool, cfg: &TestConfig, n: usize) -> Result<(f64, f64)> {
    let redis = switchyard_tests::deployment(url, &cfg.config);
    let mut conn = redis.connect().await?;
    let keys = Keys::of(&cfg.config, cluster);
    let streams: Vec<String> = keys
        .partitions(cfg.config.ingress.partitions)
        .into_iter()
        .map(|p| p.ingress)
        .collect();
    let xadd = rate(n, fill(&mut conn, &streams, n).await?);
    let started = Instant::now();
    let host = RunningHost::start(
        cfg.config.clone(),
        redis.clone(),
        switchyard::plugin::Compiler::this_program()?,
    );
    while handled(&host) < n as u64 {
        if started.elapsed() > Duration::from_secs(900) || host.is_finished() {
            bail!("only {} of {n} handled", handled(&host));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    host.stop().await?;
    Ok((xadd, rate(n, elapsed)))
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
    let cases: [(&str, &Place, usize, u32); 5] = [
        ("one node, 1 partition", &node, 1, 0),
        ("one node, 6 partitions", &node, 6, 0),
        (
            "cluster of 3 masters + 3 replicas, 6 partitions",
            &cluster,
            6,
            0,
        ),
        (
            "Sentinel master + 1 replica, wait_replicas 0",
            &sentinel,
            1,
            0,
        ),
        (
            "Sentinel master + 1 replica, wait_replicas 1",
            &sentinel,
            1,
            1,
        ),
    ];
    println!(
        "machine: {} cores, every redis-server and the host on them; {n} messages a run, concurrency {}, median of {} rounds",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.concurrency,
        a.rounds
    );
    let mut baseline = [0.0f64; 2];
    for (label, place, partitions, wait) in cases {
        for (h, handler) in [Handler::Native, Handler::Wasm].into_iter().enumerate() {
            let mut xadds = Vec::new();
            let mut drains = Vec::new();
            for _ in 0..a.rounds {
                let cfg = config(handler, a.concurrency, partitions, wait);
                let (x, d) = drain(&place.url(), place.cluster(), &cfg, n).await?;
                xadds.push(x);
                drains.push(d);
            }
            let d = switchyard_bench::median(drains.clone());
            if baseline[h] == 0.0 {
                baseline[h] = d;
            }
            println!(
                "{label:<50} {:<8} drain {:>22}/s ({:.3} of one node)  XADD {}/s",
                if handler == Handler::Native {
                    "native"
                } else {
                    "wasm"
                },
                spread(&drains),
                d / baseline[h],
                spread(&xadds)
            );
        }
    }
    Ok(())
}
