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
//! moment the host reports the handler's success (its "Message handled."
//! event, seen by a tracing layer in this process), before the ack.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use switchyard::host::RunningHost;
use switchyard_bench::{Handler, config, drain_backlog, rate, wait_handled, xadd_range};
use switchyard_tests::Redis;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of offered load at each rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Handler concurrency of the queue.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
}

/// When each numbered message was handled, filled in by the tracing layer.
#[derive(Default)]
struct Completions(Mutex<Vec<Option<Instant>>>);

struct Recorder(Arc<Completions>);

#[derive(Default)]
struct IdField(Option<usize>);

impl Visit for IdField {
    // The host records msg_id with `%` (Display), which arrives here.
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "msg_id" {
            self.0 = format!("{value:?}").parse().ok();
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let now = Instant::now();
        if event.metadata().target() != "switchyard::dispatch" {
            return;
        }
        let mut id = IdField::default();
        event.record(&mut id);
        if let Some(i) = id.0 {
            let mut done = self.0.0.lock().expect("completions lock");
            if let Some(slot) = done.get_mut(i) {
                *slot = Some(now);
            }
        }
    }
}

/// p50, p99, p999 and max of `samples`, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> [f64; 4] {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    [at(0.50), at(0.99), at(0.999), at(1.0)]
}

/// Offers `per_second` messages for `seconds` to a host running `handler`,
/// and returns each message's latency.
async fn offered(
    redis: &Redis,
    done: &Arc<Completions>,
    handler: Handler,
    per_second: u64,
    seconds: u64,
    concurrency: u32,
) -> Result<Vec<Duration>> {
    let total = (per_second * seconds) as usize;
    *done.0.lock().expect("completions lock") = vec![None; total];
    let cfg = config(&["Work"], handler, concurrency);
    let host = RunningHost::start(
        cfg.config.clone(),
        redis.client.clone(),
        switchyard::plugin::Compiler::this_program()?,
    );
    let mut conn = redis.conn().await;
    // Warm up: the host started and the path is hot before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut sent_at = Vec::with_capacity(total);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0usize;
    while sent < total {
        tick.tick().await;
        // Messages due by now under the offered rate.
        let due =
            ((started.elapsed().as_secs_f64() * per_second as f64) as usize).clamp(sent + 1, total);
        let at = Instant::now();
        xadd_range(&mut conn, cfg.ingress(), sent, due).await?;
        sent_at.resize(due, at);
        sent = due;
    }
    let offered_for = started.elapsed();
    wait_handled(&host, total as u64, Duration::from_secs(120)).await?;
    host.stop().await?;
    let achieved = rate(total, offered_for);
    if achieved < per_second as f64 * 0.95 {
        bail!("the producer managed only {achieved:.0} of {per_second} messages/s");
    }
    let done = done.0.lock().expect("completions lock");
    let mut latencies = Vec::with_capacity(total);
    for (i, at) in sent_at.iter().enumerate() {
        match done[i] {
            Some(end) => latencies.push(end.saturating_duration_since(*at)),
            None => bail!("message {i} was handled but its completion was not seen"),
        }
    }
    Ok(latencies)
}

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
    let done = Arc::new(Completions::default());
    tracing_subscriber::registry()
        .with(
            Recorder(done.clone()).with_filter(
                Targets::new().with_target("switchyard::dispatch", tracing::Level::INFO),
            ),
        )
        .init();
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
            let lat = offered(&redis, &done, handler, per_second, a.seconds, a.concurrency).await?;
            let [p50, p99, p999, max] = percentiles(lat);
            println!(
                "{:<48} {per_second:>9} {p50:>9.3} {p99:>9.3} {p999:>9.3} {max:>9.3}",
                handler.label()
            );
        }
    }
    Ok(())
}
