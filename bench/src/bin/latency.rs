//! Benchmark: latency from XADD to handler completion, p50 / p99 / p999, at
//! fixed offered rates (1,000 and 10,000 messages/s, and half of the
//! saturation rate measured first in the same run), for the native no-op
//! handler (the baseline) and the no-op WebAssembly plugin.
//!
//!     ./scripts/build-plugins.sh
//!     cargo run --release -p switchyard-bench --bin latency
//!
//! The producer is open-loop: every millisecond it sends that millisecond's
//! share of messages in one pipeline, whatever the host does, and stamps
//! each message with the time that pipeline went out. Completion is the
//! moment the host reports the handler's success (its `handled`
//! event, seen by a tracing layer in this process), before the ack.

use anyhow::Result;
use clap::Parser;
use switchyard_bench::completions::{self, percentiles};
use switchyard_bench::{Handler, config, drain_backlog, offered, rate};
use switchyard_tests::Redis;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of offered load at each rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Handler concurrency of the queue.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
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
    let done = completions::install();
    let redis = Redis::start();

    // Saturation of the wasm path, from a backlog, in this run.
    let n = 100_000;
    let saturation = rate(
        n,
        drain_backlog(&redis, &["Work"], Handler::Wasm, n, a.concurrency).await?,
    );
    let half = (saturation / 2.0 / 1000.0).round() as u64 * 1000;
    println!(
        "machine: {} cores, redis-server beside the host; concurrency {}; {} s at each rate",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.concurrency,
        a.seconds
    );
    println!(
        "saturation (no-op wasm plugin, backlog drain, with this process's tracing layer): {saturation:.0} messages/s; half: {half}/s"
    );
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "handler", "offered/s", "p50 ms", "p99 ms", "p999 ms", "max ms"
    );
    for per_second in [1_000, 10_000, half] {
        for handler in [Handler::Native, Handler::Wasm] {
            let cfg = config(&["Work"], handler, a.concurrency);
            let lat = offered(&redis, &done, &cfg, per_second, a.seconds).await?;
            let [p50, p99, p999, max] = percentiles(lat);
            println!(
                "{:<48} {per_second:>9} {p50:>9.3} {p99:>9.3} {p999:>9.3} {max:>9.3}",
                handler.label()
            );
        }
    }
    Ok(())
}
