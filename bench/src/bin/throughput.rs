//! Benchmark: end-to-end throughput of the host, from a pre-filled ingress
//! backlog to every message handled and acknowledged, beside raw Redis
//! baselines measured in the same run on the same redis-server.
//!
//!     ./scripts/build-plugins.sh
//!     cargo run --release -p switchyard-bench --bin throughput
//!
//! Baselines: pipelined XADD (the producer side), and XREADGROUP + XACK in
//! batches (the least any consumer of a queue must do). The host runs the
//! no-op plugin (`sleep` with `ms = 0`) in a fresh instance per message.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use redis::Value;
use switchyard::host::RunningHost;
use switchyard_tests::{Redis, TestConfig};

#[derive(Debug, Parser)]
struct Args {
    /// Messages for the one-route runs.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Messages for the six-queue fan-out run.
    #[arg(long, default_value_t = 20_000)]
    fanout_messages: usize,
    /// Handler concurrency of each queue.
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Batch size (pipeline depth) of the baselines.
    #[arg(long, default_value_t = 256)]
    batch: usize,
}

async fn fill(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    message_type: &str,
    n: usize,
    batch: usize,
) -> Result<Duration> {
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let mut pipe = redis::pipe();
        for j in i..(i + batch).min(n) {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("type")
                .arg(message_type)
                .arg("id")
                .arg(j)
                .arg("body")
                .arg(r#"{"SiteId":1}"#)
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
        i += batch;
    }
    Ok(started.elapsed())
}

/// XREADGROUP + XACK of `n` entries in batches: the raw consumer baseline.
async fn raw_consume(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    n: usize,
    batch: usize,
) -> Result<Duration> {
    let _: Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("raw")
        .arg("0")
        .query_async(conn)
        .await?;
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("raw")
            .arg("c")
            .arg("COUNT")
            .arg(batch)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(conn)
            .await?;
        let ids = ids_of(&reply);
        if ids.is_empty() {
            bail!("raw consumer ran dry at {done}");
        }
        let mut ack = redis::cmd("XACK");
        ack.arg(stream).arg("raw");
        for id in &ids {
            ack.arg(id);
        }
        let _: i64 = ack.query_async(conn).await?;
        done += ids.len();
    }
    Ok(started.elapsed())
}

fn ids_of(v: &Value) -> Vec<String> {
    let Value::Array(streams) = v else {
        return Vec::new();
    };
    let Some(Value::Array(kv)) = streams.first() else {
        return Vec::new();
    };
    let Some(Value::Array(entries)) = kv.get(1) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| match e {
            Value::Array(parts) => match parts.first() {
                Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn rss_peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn config(queues: &[&str], concurrency: u32, reuse: bool) -> TestConfig {
    let mut text = format!(
        "[host]\nprefix = \"@PREFIX@\"\nshutdown_timeout = \"5s\"\n[ingress]\nstream = \"@PREFIX@:ingress\"\nbatch = 512\n[routes]\n\"bench\" = [{}]\n",
        queues
            .iter()
            .map(|q| format!("\"{q}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for q in queues {
        text.push_str(&format!(
            "[queues.{q}]\nplugin = \"@PLUGINS@/sleep.wasm\"\nconcurrency = {concurrency}\nreuse_instances = {reuse}\n[queues.{q}.config]\nms = 0\n"
        ));
    }
    TestConfig::new(&text)
}

/// Runs the host on a pre-filled backlog of `n` messages routed to
/// `queues` (reusing instances or not), and returns the time until every
/// copy was handled.
async fn host_run(
    redis: &Redis,
    queues: &[&str],
    n: usize,
    concurrency: u32,
    batch: usize,
    reuse: bool,
) -> Result<Duration> {
    let cfg = config(queues, concurrency, reuse);
    let mut conn = redis.conn().await;
    fill(&mut conn, cfg.ingress(), "bench", n, batch).await?;
    let started = Instant::now();
    let host = RunningHost::start(cfg.config.clone(), redis.client.clone());
    let m = host.metrics.clone();
    let total = (n * queues.len()) as u64;
    loop {
        let done: u64 = m.queues().values().map(|c| c.succeeded).sum();
        if done >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {done} of {total} handled in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    host.stop().await?;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let redis = Redis::start();
    let mut conn = redis.conn().await;
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();

    let xadd = fill(&mut conn, "baseline", "bench", a.messages, a.batch).await?;
    let consume = raw_consume(&mut conn, "baseline", a.messages, a.batch).await?;
    let (xadd, consume) = (rate(a.messages, xadd), rate(a.messages, consume));
    let one = rate(
        a.messages,
        host_run(&redis, &["Work"], a.messages, a.concurrency, a.batch, false).await?,
    );
    let reused = rate(
        a.messages,
        host_run(&redis, &["Work"], a.messages, a.concurrency, a.batch, true).await?,
    );
    let six = [
        "Persistence",
        "Email",
        "Ticket",
        "Salesforce",
        "Zendesk",
        "WebHook",
    ];
    let fan = host_run(
        &redis,
        &six,
        a.fanout_messages,
        a.concurrency,
        a.batch,
        false,
    )
    .await?;
    let (fan_msgs, fan_copies) = (
        rate(a.fanout_messages, fan),
        rate(a.fanout_messages * 6, fan),
    );

    println!(
        "machine: {} cores; redis-server beside the host; batch {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.batch
    );
    println!(
        "{:<52} {:>12}",
        "baseline: pipelined XADD",
        format!("{xadd:.0}/s")
    );
    println!(
        "{:<52} {:>12}",
        "baseline: XREADGROUP + XACK, batched",
        format!("{consume:.0}/s")
    );
    println!(
        "{:<52} {:>12}  {:.3} of raw consume",
        "host, one route, no-op wasm plugin",
        format!("{one:.0}/s"),
        one / consume
    );
    println!(
        "{:<52} {:>12}  {:.3} of raw consume",
        "host, one route, no-op wasm plugin, reused instances",
        format!("{reused:.0}/s"),
        reused / consume
    );
    println!(
        "{:<52} {:>12}  ({:.0} copies/s, {:.3} of raw consume)",
        "host, chat.ended fan-out to 6 queues",
        format!("{fan_msgs:.0}/s"),
        fan_copies,
        fan_copies / consume
    );
    println!(
        "peak RSS of this process (host + benchmark): {:.0} MiB",
        rss_peak_mib()
    );
    Ok(())
}
