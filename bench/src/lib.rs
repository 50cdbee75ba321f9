//! What the benchmark programs share: filling a stream, the host's
//! configuration for a run, and running the host until a number of messages
//! are handled.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use redis::aio::MultiplexedConnection;
use switchyard::supervisor::RunningHost;
use switchyard_tests::{Redis, TestConfig};

/// The message type every benchmark route carries.
pub const MESSAGE_TYPE: &str = "bench";

/// Which handler the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// The host's built-in native no-op handler: the baseline.
    Native,
    /// The no-op WebAssembly plugin, a fresh instance per message.
    Wasm,
    /// The no-op WebAssembly plugin, instances reused per worker.
    WasmReused,
}

impl Handler {
    pub fn label(self) -> &'static str {
        match self {
            Handler::Native => "native no-op handler (builtin:noop)",
            Handler::Wasm => "no-op wasm plugin, fresh instance per message",
            Handler::WasmReused => "no-op wasm plugin, reused instances",
        }
    }
}

/// Adds `n` messages numbered from `first` (their `id` field) to `stream`,
/// `batch` to a pipeline. Returns how long it took.
pub async fn fill(
    conn: &mut MultiplexedConnection,
    stream: &str,
    first: usize,
    n: usize,
    batch: usize,
) -> Result<Duration> {
    let started = Instant::now();
    let mut i = first;
    while i < first + n {
        let end = (i + batch).min(first + n);
        xadd_range(conn, stream, i, end).await?;
        i = end;
    }
    Ok(started.elapsed())
}

/// Adds the messages numbered `from..to` in one pipeline.
pub async fn xadd_range(
    conn: &mut MultiplexedConnection,
    stream: &str,
    from: usize,
    to: usize,
) -> Result<()> {
    let mut pipe = redis::pipe();
    for j in from..to {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("type")
            .arg(MESSAGE_TYPE)
            .arg("id")
            .arg(j)
            .arg("body")
            .arg(r#"{"SiteId":1}"#)
            .ignore();
    }
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

/// A configuration routing the benchmark type to `queues`, each running
/// `handler` with `concurrency` slots.
pub fn config(queues: &[&str], handler: Handler, concurrency: u32) -> TestConfig {
    let mut text = format!(
        "[host]\nprefix = \"@PREFIX@\"\nshutdown_timeout = \"5s\"\n[ingress]\nstream = \"@PREFIX@:ingress\"\nbatch = 512\n[routes]\n\"{MESSAGE_TYPE}\" = [{}]\n",
        queues
            .iter()
            .map(|q| format!("\"{q}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (plugin, reuse) = match handler {
        Handler::Native => ("builtin:noop".to_owned(), false),
        Handler::Wasm => ("@PLUGINS@/noop.wasm".to_owned(), false),
        Handler::WasmReused => ("@PLUGINS@/noop.wasm".to_owned(), true),
    };
    for q in queues {
        text.push_str(&format!(
            "[queues.{q}]\nplugin = \"{plugin}\"\nconcurrency = {concurrency}\nreuse_instances = {reuse}\n"
        ));
    }
    TestConfig::new(&text)
}

/// Total messages handled successfully by a running host.
pub fn handled(host: &RunningHost) -> u64 {
    host.metrics.queues().values().map(|c| c.succeeded).sum()
}

/// Waits until `host` has handled `total` messages.
pub async fn wait_handled(host: &RunningHost, total: u64, limit: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let done = handled(host);
        if done >= total {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("only {done} of {total} handled in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs the host on a pre-filled backlog of `n` messages routed to
/// `queues`, and returns the time until every copy was handled.
pub async fn drain_backlog(
    redis: &Redis,
    queues: &[&str],
    handler: Handler,
    n: usize,
    concurrency: u32,
) -> Result<Duration> {
    let cfg = config(queues, handler, concurrency);
    let mut conn = redis.conn().await;
    fill(&mut conn, cfg.ingress(), 0, n, 256).await?;
    run_until_handled(redis, &cfg, (n * queues.len()) as u64).await
}

/// Starts a host on `cfg` over what its streams hold, and returns the time
/// until it has handled `expected` messages; the host is stopped after.
pub async fn run_until_handled(redis: &Redis, cfg: &TestConfig, expected: u64) -> Result<Duration> {
    let started = Instant::now();
    let host = RunningHost::start(
        cfg.config.clone(),
        switchyard_tests::deployment(redis.url(), &cfg.config),
        switchyard::plugin::Compiler::this_program()?,
    );
    wait_handled(&host, expected, Duration::from_secs(900)).await?;
    let elapsed = started.elapsed();
    host.stop().await?;
    Ok(elapsed)
}

/// The median of `values`.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `median (min to max)`.
pub fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    format!("{:.0} ({min:.0} to {max:.0})", median(values.to_vec()))
}

/// Runs the host while a producer adds `n` messages as fast as pipelined
/// XADD goes (256 a pipeline), and returns the time from the first XADD
/// until every copy was handled.
pub async fn with_producer(
    redis: &Redis,
    queues: &[&str],
    handler: Handler,
    n: usize,
    concurrency: u32,
) -> Result<Duration> {
    let cfg = config(queues, handler, concurrency);
    let host = RunningHost::start(
        cfg.config.clone(),
        switchyard_tests::deployment(redis.url(), &cfg.config),
        switchyard::plugin::Compiler::this_program()?,
    );
    // The host is up when it has created the ingress group.
    let mut conn = redis.conn().await;
    let started = Instant::now();
    while !group_exists(&mut conn, cfg.ingress()).await {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the host did not start in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let stream = cfg.ingress().to_owned();
    let producer = tokio::spawn(async move { fill(&mut conn, &stream, 0, n, 256).await });
    wait_handled(&host, (n * queues.len()) as u64, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();
    producer.await??;
    host.stop().await?;
    Ok(elapsed)
}

async fn group_exists(conn: &mut MultiplexedConnection, stream: &str) -> bool {
    redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async::<redis::Value>(conn)
        .await
        .is_ok_and(|v| matches!(v, redis::Value::Array(g) if !g.is_empty()))
}

/// Peak resident memory of this process (host and benchmark), in MiB.
pub fn rss_peak_mib() -> f64 {
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

/// Messages per second.
pub fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Offers `per_second` messages for `seconds` to a host running `cfg`, and
/// returns each message's latency, from the XADD pipeline that carried it
/// to the host's report of its handling (seen by `done`, which
/// [`completions::install`] made).
///
/// The producer is open-loop: every millisecond it sends that
/// millisecond's share of messages in one pipeline, whatever the host does.
pub async fn offered(
    redis: &Redis,
    done: &std::sync::Arc<completions::Completions>,
    cfg: &TestConfig,
    per_second: u64,
    seconds: u64,
) -> Result<Vec<Duration>> {
    let total = (per_second * seconds) as usize;
    *done.0.lock().expect("completions lock") = vec![None; total];
    let host = RunningHost::start(
        cfg.config.clone(),
        switchyard_tests::deployment(redis.url(), &cfg.config),
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

/// When each numbered message was handled, seen by [`Recorder`]: a host's
/// `handled` events (see `switchyard::events`), in this process, before
/// the ack.
pub mod completions {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::Context;

    /// When each numbered message was handled, filled in by the tracing layer.
    #[derive(Debug, Default)]
    pub struct Completions(pub Mutex<Vec<Option<Instant>>>);

    #[derive(Debug)]
    pub struct Recorder(pub Arc<Completions>);

    /// The event's name and the message id it is about.
    #[derive(Default)]
    struct Fields {
        handled: bool,
        id: Option<usize>,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "event" {
                self.handled = value == "handled";
            }
        }

        // The host records msg_id with `%` (Display), which arrives here.
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "msg_id" {
                self.id = format!("{value:?}").parse().ok();
            }
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let now = Instant::now();
            let mut fields = Fields::default();
            event.record(&mut fields);
            if !fields.handled {
                return;
            }
            if let Some(i) = fields.id {
                let mut done = self.0.0.lock().expect("completions lock");
                if let Some(slot) = done.get_mut(i) {
                    *slot = Some(now);
                }
            }
        }
    }

    /// p50, p99, p999 and max of `samples`, in milliseconds.
    pub fn percentiles(mut samples: Vec<Duration>) -> [f64; 4] {
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        [at(0.50), at(0.99), at(0.999), at(1.0)]
    }

    /// Installs a [`Recorder`] as this process's tracing subscriber.
    pub fn install() -> Arc<Completions> {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::filter::Targets;
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let done = Arc::new(Completions::default());
        tracing_subscriber::registry()
            .with(Recorder(done.clone()).with_filter(
                Targets::new().with_target("switchyard::events", tracing::Level::INFO),
            ))
            .init();
        done
    }
}
