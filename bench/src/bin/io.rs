//! Benchmark: what a plugin's I/O costs, beside native baselines measured
//! in the same run on the same machine:
//!
//! - HTTP: one POST per message to a local HTTP server, from the
//!   `bench-io` plugin and from the host's built-in native handler
//!   `http-post`, which sends the same request through the same queue
//!   client (grant checks, limits, connection pool). With keep-alive
//!   pooling (the default) and without (`http_keep_alive = false`): messages/s
//!   draining a backlog, and latency (XADD to handled) at a fixed offered
//!   rate.
//! - key-value: one `get` and one `set` per message through
//!   `wasi:keyvalue`, beside the no-op plugin on the same path and raw
//!   `GET` + `SET` from a client with as many requests in flight.
//! - publish: one follow-up message per message, beside the no-op plugin.
//!
//! Run with:
//!
//! ```text
//! ./scripts/build-plugins.sh
//! cargo run --release -p switchyard-bench --bin io
//! ```

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use switchyard_bench::completions::{self, percentiles};
use switchyard_bench::{fill, median, offered, rate, run_until_handled, spread};
use switchyard_standins::{Api, StandIn};
use switchyard_tests::{Redis, TestConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Messages of each pooled HTTP backlog run.
    #[arg(long, default_value_t = 20_000)]
    http_messages: usize,
    /// Messages of each unpooled HTTP backlog run (each opens a
    /// connection, which lingers in TIME_WAIT).
    #[arg(long, default_value_t = 4_000)]
    unpooled_messages: usize,
    /// Offered rate of the HTTP latency runs, messages/s.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of each latency run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Handler concurrency of the HTTP queues (and connections per host).
    #[arg(long, default_value_t = 16)]
    http_concurrency: u32,
    /// Messages of each key-value and publish run.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Handler concurrency of the key-value and publish queues.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Only these sections (http, kv, publish); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// HTTP: only the native, wasm or reused runs (for profiling; the
    /// ratios need native first).
    #[arg(long)]
    http_handler: Option<String>,
    /// Rounds of each measurement; figures are medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn header() -> String {
    "[host]\nprefix = \"@PREFIX@\"\nshutdown_timeout = \"5s\"\n\
     [ingress]\nstream = \"@PREFIX@:ingress\"\nbatch = 512\n"
        .to_owned()
}

/// How the HTTP benchmark's queue handles messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poster {
    Native,
    Wasm,
    WasmReused,
}

impl Poster {
    fn label(self) -> &'static str {
        match self {
            Poster::Native => "native (builtin:http-post)",
            Poster::Wasm => "wasm plugin (bench-io)",
            Poster::WasmReused => "wasm plugin, reused instances",
        }
    }
}

/// A queue `Work` that takes the benchmark's messages and POSTs each to
/// `url`, natively or from the plugin.
fn http_config(poster: Poster, url: &str, keep_alive: bool, concurrency: u32) -> TestConfig {
    let (plugin, reuse) = match poster {
        Poster::Native => ("builtin:http-post", false),
        Poster::Wasm => ("@PLUGINS@/bench_io.wasm", false),
        Poster::WasmReused => ("@PLUGINS@/bench_io.wasm", true),
    };
    TestConfig::new(&format!(
        "{}[routes]\n\"bench\" = [\"Work\"]\n[queues.Work]\nplugin = \"{plugin}\"\n\
         concurrency = {concurrency}\nreuse_instances = {reuse}\nallowed_hosts = [\"{url}\"]\n\
         max_connections_per_host = {concurrency}\nhttp_keep_alive = {keep_alive}\n\
         [queues.Work.config]\ndo = \"post\"\nurl = \"{url}/events\"\n",
        header()
    ))
}

/// Runs a host on `cfg` over a backlog of `n` messages until it has
/// handled `expected`; returns the time.
async fn drain(redis: &Redis, cfg: &TestConfig, n: usize, expected: u64) -> Result<Duration> {
    let mut conn = redis.conn().await;
    fill(&mut conn, cfg.ingress(), 0, n, 256).await?;
    run_until_handled(redis, cfg, expected).await
}

async fn http(
    a: &Args,
    redis: &Redis,
    done: &std::sync::Arc<completions::Completions>,
) -> Result<()> {
    let server = StandIn::start(Api::Echo).await?;
    println!(
        "\nHTTP: one POST per message to a local server; concurrency {}; {} rounds, each handler in turn; \
         latency at {}/s for {} s",
        a.http_concurrency, a.rounds, a.rate, a.seconds
    );
    println!(
        "{:<44} {:>26} {:>14} {:>8} {:>8} {:>12}",
        "handler", "messages/s", "ratio", "p50 ms", "p99 ms", "connections"
    );
    let posters: Vec<Poster> = [Poster::Native, Poster::Wasm, Poster::WasmReused]
        .into_iter()
        .filter(|p| {
            let kind = match p {
                Poster::Native => "native",
                Poster::Wasm => "wasm",
                Poster::WasmReused => "reused",
            };
            a.http_handler.as_deref().is_none_or(|h| h == kind)
        })
        .collect();
    for keep_alive in [true, false] {
        let n = if keep_alive {
            a.http_messages
        } else {
            a.unpooled_messages
        };
        // rates[poster][round]
        let mut rates = vec![Vec::new(); posters.len()];
        let mut connections = vec![0; posters.len()];
        for _ in 0..a.rounds {
            for (i, poster) in posters.iter().enumerate() {
                let before = server.connections();
                let cfg = http_config(*poster, &server.url(), keep_alive, a.http_concurrency);
                rates[i].push(rate(n, drain(redis, &cfg, n, n as u64).await?));
                connections[i] = server.connections() - before;
            }
        }
        for (i, poster) in posters.iter().enumerate() {
            let label = format!(
                "{} ({})",
                poster.label(),
                if keep_alive { "pooled" } else { "unpooled" }
            );
            let cfg = http_config(*poster, &server.url(), keep_alive, a.http_concurrency);
            let [p50, p99, ..] = percentiles(offered(redis, done, &cfg, a.rate, a.seconds).await?);
            // Each round's own ratio to that round's native rate.
            let ratios: Vec<f64> = (0..a.rounds).map(|r| rates[i][r] / rates[0][r]).collect();
            let ratio = if *poster == Poster::Native {
                "1".to_owned()
            } else {
                format!("{:.3}", median(ratios))
            };
            println!(
                "{label:<44} {:>26} {ratio:>14} {p50:>8.3} {p99:>8.3} {:>12}",
                spread(&rates[i]),
                connections[i]
            );
        }
    }
    Ok(())
}

/// `Work` runs `plugin` (with `extra` settings); `bench.out` goes to a
/// native no-op queue.
fn plain_config(plugin: &str, extra: &str, concurrency: u32) -> TestConfig {
    TestConfig::new(&format!(
        "{}[routes]\n\"bench\" = [\"Work\"]\n\"bench.out\" = [\"Sink\"]\n\
         [queues.Work]\nplugin = \"{plugin}\"\nconcurrency = {concurrency}\n{extra}\n\
         [queues.Sink]\nplugin = \"builtin:noop\"\nconcurrency = {concurrency}\n",
        header()
    ))
}

/// `n` rounds of GET then SET, `in_flight` at a time, from one client.
async fn raw_get_set(redis: &Redis, n: usize, in_flight: usize) -> Result<Duration> {
    let conn = redis.conn().await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..in_flight {
        let mut conn = conn.clone();
        let share = n / in_flight + usize::from(t < n % in_flight);
        tasks.spawn(async move {
            for i in 0..share {
                let key = format!("raw:k{}", (t * share + i) % 1000);
                let old: Option<Vec<u8>> =
                    redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                let mut new = old.unwrap_or_default();
                new.push(b'x');
                new.truncate(64);
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(new)
                    .query_async(&mut conn)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}

/// The bench-io plugin on `Work`, doing `what`, with `extra` settings.
fn bench_io(what: &str, extra: &str, concurrency: u32) -> TestConfig {
    plain_config(
        "@PLUGINS@/bench_io.wasm",
        &format!("{extra}\n[queues.Work.config]\ndo = \"{what}\""),
        concurrency,
    )
}

/// Rounds of draining a backlog of `n` with the plugin doing nothing, then
/// with `cfg` (whose run handles `expected` messages in all): the medians,
/// and the median of each round's ratio.
async fn against_nothing(
    a: &Args,
    redis: &Redis,
    cfg: impl Fn() -> TestConfig,
    expected: u64,
) -> Result<(Vec<f64>, Vec<f64>, f64)> {
    let n = a.messages;
    let (mut base, mut with) = (Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        let nothing = bench_io("nothing", "", a.concurrency);
        base.push(rate(n, drain(redis, &nothing, n, n as u64).await?));
        with.push(rate(n, drain(redis, &cfg(), n, expected).await?));
    }
    let ratio = median(with.iter().zip(&base).map(|(w, b)| w / b).collect());
    Ok((base, with, ratio))
}

async fn keyvalue(a: &Args, redis: &Redis) -> Result<()> {
    let n = a.messages;
    println!(
        "\nKey-value: one get and one set per message; concurrency {}; {} rounds",
        a.concurrency, a.rounds
    );
    let (base, with, ratio) = against_nothing(
        a,
        redis,
        || bench_io("kv", "[queues.Work.keyvalue]", a.concurrency),
        n as u64,
    )
    .await?;
    let mut raw = Vec::new();
    for _ in 0..a.rounds {
        raw.push(rate(
            n,
            raw_get_set(redis, n, a.concurrency as usize).await?,
        ));
    }
    let added = (1.0 / median(with.clone()) - 1.0 / median(base.clone())) * 1e6;
    println!("{:<62} {:>26}", "what", "per second");
    println!(
        "{:<62} {:>26}",
        "baseline: raw GET + SET from a client, pairs",
        spread(&raw)
    );
    println!(
        "{:<62} {:>26}",
        "baseline: the same plugin doing nothing, messages",
        spread(&base)
    );
    println!(
        "{:<62} {:>26}  {ratio:.3} of nothing; +{added:.1} µs a message",
        "plugin: get + set through wasi:keyvalue, messages",
        spread(&with)
    );
    Ok(())
}

async fn publish(a: &Args, redis: &Redis) -> Result<()> {
    let n = a.messages;
    println!(
        "\nPublish: one follow-up message per message, routed to a native no-op queue; \
         concurrency {}; {} rounds",
        a.concurrency, a.rounds
    );
    let (base, with, ratio) = against_nothing(
        a,
        redis,
        || bench_io("publish", "publish = [\"bench.out\"]", a.concurrency),
        2 * n as u64,
    )
    .await?;
    let added = (1.0 / median(with.clone()) - 1.0 / median(base.clone())) * 1e6;
    println!("{:<62} {:>26}", "what", "messages/s");
    println!(
        "{:<62} {:>26}",
        "baseline: the same plugin doing nothing",
        spread(&base)
    );
    println!(
        "{:<62} {:>26}  {ratio:.3} of nothing; +{added:.1} µs a message",
        "plugin publishing one message, until the follow-ups are handled",
        spread(&with)
    );
    Ok(())
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
    let done = completions::install();
    let redis = Redis::start();
    let wants = |s: &str| a.only.is_empty() || a.only.iter().any(|o| o == s);
    println!(
        "machine: {} cores; redis-server and the HTTP server beside the host",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if wants("http") {
        http(&a, &redis, &done).await?;
    }
    if wants("kv") {
        keyvalue(&a, &redis).await?;
    }
    if wants("publish") {
        publish(&a, &redis).await?;
    }
    Ok(())
}
