//! Benchmark: end-to-end throughput, from XADD to handled and acknowledged,
//! beside baselines measured in the same run on the same redis-server: raw
//! Redis (pipelined XADD; XREADGROUP + XACK in batches) and the host running
//! its built-in native no-op handler on the same path as the plugin.
//!
//!     ./scripts/build-plugins.sh
//!     cargo run --release -p switchyard-bench --bin throughput

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use redis::Value;
use switchyard_bench::{Handler, drain_backlog, fill, rate, rss_peak_mib, with_producer};
use switchyard_tests::{CHAT_ENDED_QUEUES, Redis};

#[derive(Debug, Parser)]
struct Args {
    /// Messages for the one-route runs.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Messages for the six-queue fan-out runs.
    #[arg(long, default_value_t = 30_000)]
    fanout_messages: usize,
    /// Handler concurrency of each queue.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Runs only the one-route backlog drain with this handler (native,
    /// wasm, reused), for profiling.
    #[arg(long)]
    only: Option<String>,
    /// Log as the `switchyard` binary does by default (info, one line per
    /// handled message), into /dev/null: the cost of the log itself.
    #[arg(long)]
    log: bool,
    /// Instead of the full table: the one-route backlog drain for each
    /// handler at concurrency 16, 64 and 256, in one run.
    #[arg(long)]
    sweep: bool,
}

/// XREADGROUP + XACK of `n` entries, 256 a batch: the raw consumer baseline.
async fn raw_consume(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    n: usize,
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
            .arg(256)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(conn)
            .await?;
        let entries = switchyard::stream::parse_read(&reply)?;
        if entries.is_empty() {
            bail!("raw consumer ran dry at {done}");
        }
        let mut ack = redis::cmd("XACK");
        ack.arg(stream).arg("raw");
        for e in &entries {
            ack.arg(&e.id);
        }
        let _: i64 = ack.query_async(conn).await?;
        done += entries.len();
    }
    Ok(started.elapsed())
}

fn row(what: &str, rate: f64, ratios: &str) {
    println!("{what:<66} {:>10}/s  {ratios}", format!("{rate:.0}"));
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<std::process::ExitCode> {
    // The embedded host compiles plugins with this same program.
    if let Some(code) = switchyard::plugin::compile::serve_if_asked() {
        return Ok(code);
    }
    tokio::runtime::Runtime::new()?.block_on(run())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run() -> Result<()> {
    let a = Args::parse();
    if a.log {
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(null))
            .init();
    }
    let redis = Redis::start();
    let mut conn = redis.conn().await;
    let (n, f, c) = (a.messages, a.fanout_messages, a.concurrency);

    if let Some(only) = a.only {
        let handler = match only.as_str() {
            "native" => Handler::Native,
            "wasm" => Handler::Wasm,
            "reused" => Handler::WasmReused,
            other => bail!("--only native|wasm|reused, not {other:?}"),
        };
        let r = rate(n, drain_backlog(&redis, &["Work"], handler, n, c).await?);
        row(handler.label(), r, "");
        return Ok(());
    }

    if a.sweep {
        println!(
            "one route, pre-filled backlog of {n}; messages/s, and ratio to native at the same concurrency"
        );
        for c in [16, 64, 256] {
            let mut native = 0.0;
            for h in [Handler::Native, Handler::Wasm, Handler::WasmReused] {
                let r = rate(n, drain_backlog(&redis, &["Work"], h, n, c).await?);
                if h == Handler::Native {
                    native = r;
                }
                row(
                    &format!("  concurrency {c:>3}: {}", h.label()),
                    r,
                    &format!("{:.3} of native", r / native),
                );
            }
        }
        return Ok(());
    }

    let xadd = rate(n, fill(&mut conn, "baseline", 0, n, 256).await?);
    let consume = rate(n, raw_consume(&mut conn, "baseline", n).await?);

    let mut backlog = Vec::new();
    for h in [Handler::Native, Handler::Wasm, Handler::WasmReused] {
        backlog.push((h, rate(n, drain_backlog(&redis, &["Work"], h, n, c).await?)));
    }
    let mut producer = Vec::new();
    for h in [Handler::Native, Handler::Wasm] {
        producer.push((h, rate(n, with_producer(&redis, &["Work"], h, n, c).await?)));
    }
    let mut fanout = Vec::new();
    for h in [Handler::Native, Handler::Wasm] {
        fanout.push((
            h,
            rate(f, drain_backlog(&redis, CHAT_ENDED_QUEUES, h, f, c).await?),
        ));
    }

    println!(
        "machine: {} cores, redis-server beside the host; {n} messages one route, {f} fan-out; concurrency {c} per queue",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    row("baseline: pipelined XADD, 256 a pipeline", xadd, "");
    row(
        "baseline: XREADGROUP + XACK, 256 a batch",
        consume,
        &format!("{:.3} of XADD", consume / xadd),
    );
    let native = backlog[0].1;
    println!("one route, pre-filled backlog:");
    for (h, r) in &backlog {
        row(
            &format!("  {}", h.label()),
            *r,
            &format!(
                "{:.3} of native, {:.3} of raw consume",
                r / native,
                r / consume
            ),
        );
    }
    println!("one route, producer adding while the host runs:");
    for (h, r) in &producer {
        row(
            &format!("  {}", h.label()),
            *r,
            &format!(
                "{:.3} of native, {:.3} of XADD",
                r / producer[0].1,
                r / xadd
            ),
        );
    }
    println!("chat.ended fan-out to 6 queues, pre-filled backlog (messages/s; copies = 6x):");
    for (h, r) in &fanout {
        row(
            &format!("  {}", h.label()),
            *r,
            &format!(
                "{:.0} copies/s, {:.3} of native, {:.3} of raw consume",
                r * 6.0,
                r / fanout[0].1,
                r * 6.0 / consume
            ),
        );
    }
    println!(
        "peak RSS of this process (host and benchmark): {:.0} MiB",
        rss_peak_mib()
    );
    Ok(())
}
