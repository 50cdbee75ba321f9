//! Benchmark: the time from a plugin file being replaced to the first
//! message handled by the new version, under a steady stream of messages.
//!
//! For each round a new version of the plugin (the same component with a
//! custom section that changes its content hash) is renamed into place, and
//! the clock stops when the host's counters show the first message settled
//! by that version. A second series swaps back to versions already seen,
//! which the compiled-code cache serves without compiling.
//!
//!     cargo run --release -p switchyard-bench --bin reload -- --plugin target/wasm32-wasip2/release/sleep.wasm

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use switchyard::supervisor::RunningHost;
use switchyard_tests::{Redis, TestConfig, plugin_version, version_hash, xadd};

#[derive(Debug, Parser)]
struct Args {
    /// The plugin to swap.
    #[arg(long)]
    plugin: PathBuf,
    /// New versions to swap in.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Linear memory cap for the queue (large runtimes need more).
    #[arg(long, default_value_t = 256)]
    memory_mib: u32,
    /// Messages sent per second while the benchmark runs.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<44} n={:<3} min {:>8.1} ms  median {:>8.1} ms  max {:>8.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1])
    );
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
    let args = Args::parse();
    let base = std::fs::read(&args.plugin)
        .with_context(|| format!("reading {}", args.plugin.display()))?;
    let bytes_len = base.len();
    let redis = Redis::start();
    let dir = std::env::temp_dir().join(format!("switchyard-bench-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("plugin.wasm");
    std::fs::write(&file, plugin_version(&base, 0))?;
    let cfg = TestConfig::new(&format!(
        r#"
[host]
prefix = "@PREFIX@"
cache_dir = "{cache}"
[routes]
"work" = ["Work"]
[queues.Work]
plugin = "{plugin}"
concurrency = 2
memory_mib = {mem}
handler_timeout = "5s"
visibility_timeout = "10s"
"#,
        cache = dir.join("cache").display(),
        plugin = file.display(),
        mem = args.memory_mib,
    ));
    let host = RunningHost::start(
        cfg.config.clone(),
        switchyard_tests::deployment(redis.url(), &cfg.config),
        switchyard::plugin::Compiler::this_program()?,
    );
    let m = host.metrics.clone();

    // A steady stream of messages while the benchmark runs.
    let every = Duration::from_secs(1) / args.rate.max(1);
    let producer = {
        let mut conn = redis.conn().await;
        let ingress = cfg.ingress().to_string();
        tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                xadd(
                    &mut conn,
                    &ingress,
                    &[("type", "work"), ("id", &i.to_string()), ("body", "{}")],
                )
                .await;
                i += 1;
                tokio::time::sleep(every).await;
            }
        })
    };
    let started = Instant::now();
    // Settled counts a success or a dead letter alike: a plugin may reject
    // the benchmark's messages; what is measured is which version settled.
    while m.queue("Work").by_plugin().is_empty() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the host handled nothing in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let swap = |bytes: Vec<u8>| {
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    let until_served = |hash: String| {
        let m = m.clone();
        async move {
            let t0 = Instant::now();
            loop {
                if m.queue("Work").by_plugin().contains_key(&hash) {
                    return Ok(t0.elapsed());
                }
                if t0.elapsed() > Duration::from_secs(120) {
                    bail!("version {hash} never served");
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
    };

    // A large plugin's new version is served on Winch's code, then
    // Cranelift's takes its place: each round waits for that too, so the
    // next one does not share the cores with it.
    let optimized = || switchyard::metrics::ReloadMetrics::get(&m.reloads.plugin_optimized);
    let mut fresh = Vec::new();
    let mut optimizing = Vec::new();
    for round in 1..=args.rounds {
        let bytes = plugin_version(&base, round);
        let hash = version_hash(&bytes);
        let before = optimized();
        let t0 = Instant::now();
        let waiting = until_served(hash);
        swap(bytes);
        fresh.push(waiting.await?);
        if bytes_len >= switchyard::plugin::BASELINE_MIN_BYTES {
            while optimized() == before {
                if t0.elapsed() > Duration::from_secs(120) {
                    bail!("round {round} never ran on Cranelift's code");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            optimizing.push(t0.elapsed());
        }
    }
    // Back to versions already compiled: served from the cache. A version
    // counts as served again once its count grows.
    let mut cached = Vec::new();
    for round in 1..=args.rounds.min(5) {
        let bytes = plugin_version(&base, round);
        let hash = version_hash(&bytes);
        let before = m.queue("Work").by_plugin().get(&hash).copied().unwrap_or(0);
        let t0 = Instant::now();
        swap(bytes);
        loop {
            if m.queue("Work").by_plugin().get(&hash).copied().unwrap_or(0) > before {
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("version {hash} never served again");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        cached.push(t0.elapsed());
    }
    producer.abort();
    host.stop().await?;

    println!(
        "plugin {} ({} bytes), {} messages/s; each version renamed into place (taken by the watcher at once)",
        args.plugin.display(),
        base.len(),
        args.rate,
    );
    summary("write -> first message on a new version", fresh);
    if !optimizing.is_empty() {
        summary("write -> new version on Cranelift's code", optimizing);
    }
    summary("write -> first message on a cached version", cached);
    let c = m.queue("Work").snapshot();
    println!(
        "messages handled {}, failed {}, dead-lettered {}",
        c.succeeded, c.failed, c.dead_lettered
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
