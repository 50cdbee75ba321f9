//! Benchmark: the cost of one handler call, without Redis: the `bench-io`
//! plugin (fresh instance per call, or reused) doing nothing or one HTTP
//! POST to a local server, beside the native built-in handlers doing the
//! same, `concurrency` calls at a time; and the Python audit plugin on
//! Cranelift's code and on Winch's (which serves a new version of a large
//! plugin until Cranelift's is ready).
//!
//! ```text
//! ./scripts/build-plugins.sh
//! cargo run --release -p switchyard-bench --bin call
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use switchyard::config::HttpSettings;
use switchyard::grants::{AllowedHost, HttpGrant};
use switchyard::metrics::QueueMetrics;
use switchyard::plugin::http::QueueHttp;
use switchyard::plugin::{
    CallContext, Compiler, Delivery, LoadLimits, Outcome, PluginEngine, WarmPool,
};
use switchyard_standins::{Api, StandIn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Calls of each kind.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Only the kinds whose label contains this.
    #[arg(long)]
    only: Option<String>,
}

fn main() -> Result<std::process::ExitCode> {
    if let Some(code) = switchyard::plugin::compile::serve_if_asked() {
        return Ok(code);
    }
    tokio::runtime::Runtime::new()?.block_on(run())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run() -> Result<()> {
    let a = Args::parse();
    let server = StandIn::start(Api::Echo).await?;
    let engine = PluginEngine::new(None, Compiler::this_program()?)?;
    let limits = LoadLimits {
        max_bytes: 128 << 20,
        compile: switchyard::plugin::CompileLimits {
            cpu: Duration::from_secs(60),
            memory_mib: 2048,
        },
    };
    use switchyard::config::PluginRef;
    let path = PluginRef::File(switchyard_tests::plugin("bench_io"));
    let wasm = Arc::new(engine.load(&path, &limits, None).await?.expect("loaded"));
    let winch = engine.clone().winch_only()?;
    let wasm_winch = Arc::new(winch.load(&path, &limits, None).await?.expect("loaded"));
    let python = PluginRef::File(switchyard_tests::plugin("python_audit"));
    let py = Arc::new(engine.load(&python, &limits, None).await?.expect("loaded"));
    let py_winch = Arc::new(winch.load(&python, &limits, None).await?.expect("loaded"));
    let noop = Arc::new(
        engine
            .load(&PluginRef::Builtin("noop".into()), &limits, None)
            .await?
            .expect("loaded"),
    );
    let post = Arc::new(
        engine
            .load(&PluginRef::Builtin("http-post".into()), &limits, None)
            .await?
            .expect("loaded"),
    );
    let settings = HttpSettings {
        grant: HttpGrant {
            allowed: vec![AllowedHost::parse(&server.url())?],
        },
        max_connections_per_host: a.concurrency as u32,
        ..Default::default()
    };
    let cx = |what: &str| {
        let mut config = serde_json::Map::new();
        config.insert("do".into(), what.into());
        config.insert("url".into(), format!("{}/events", server.url()).into());
        CallContext {
            queue: "Work".into(),
            timeout: Duration::from_secs(10),
            memory_bytes: 256 << 20,
            config: Arc::new(config),
            secrets: Arc::default(),
            http: Arc::new(QueueHttp::new(
                "Work",
                settings.clone(),
                Arc::default(),
                Arc::new(QueueMetrics::default()),
            )),
            keyvalue: None,
            publish: Arc::default(),
            max_publish_bytes: 1 << 20,
            sql: None,
            mail: None,
            metrics: Arc::new(QueueMetrics::default()),
        }
    };
    println!(
        "{} calls each, {} at a time, on {} cores; a local HTTP server in this process",
        a.calls,
        a.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<44} {:>10} {:>10}", "call", "calls/s", "µs a call");
    for (label, plugin, what, reuse) in [
        ("native no-op", &noop, "nothing", false),
        ("wasm, nothing, fresh instance", &wasm, "nothing", false),
        ("wasm, nothing, reused instance", &wasm, "nothing", true),
        ("native POST", &post, "post", false),
        ("wasm POST, fresh instance", &wasm, "post", false),
        ("wasm POST, reused instance", &wasm, "post", true),
        ("wasm GET, reused instance", &wasm, "get", true),
        (
            "wasm, nothing, fresh instance, Winch",
            &wasm_winch,
            "nothing",
            false,
        ),
        (
            "wasm, nothing, reused instance, Winch",
            &wasm_winch,
            "nothing",
            true,
        ),
        (
            "wasm POST, reused instance, Winch",
            &wasm_winch,
            "post",
            true,
        ),
        ("Python audit, fresh instance", &py, "nothing", false),
        (
            "Python audit, fresh instance, Winch",
            &py_winch,
            "nothing",
            false,
        ),
        ("Python audit, reused instance", &py, "nothing", true),
        (
            "Python audit, reused instance, Winch",
            &py_winch,
            "nothing",
            true,
        ),
    ] {
        if a.only.as_deref().is_some_and(|o| !label.contains(o)) {
            continue;
        }
        let cx = cx(what);
        let pool = reuse.then(|| Arc::new(WarmPool::default()));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..a.concurrency {
            let (engine, plugin, cx, pool) =
                (engine.clone(), Arc::clone(plugin), cx.clone(), pool.clone());
            let share = a.calls / a.concurrency;
            tasks.spawn(async move {
                for i in 0..share {
                    let message = Delivery {
                        id: format!("{t}-{i}"),
                        message_type: "bench".into(),
                        queue: "Work".into(),
                        body: "{\"SiteId\":1}".into(),
                        headers: Vec::new(),
                        attempt: 1,
                        trace: None,
                    };
                    let r = engine
                        .call(plugin.clone(), cx.clone(), message, pool.clone())
                        .await;
                    if r.outcome != Outcome::Success {
                        anyhow::bail!("{:?}", r.outcome);
                    }
                }
                Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let took = started.elapsed();
        let rate = a.calls as f64 / took.as_secs_f64();
        println!("{label:<44} {rate:>10.0} {:>10.1}", 1e6 / rate);
    }
    Ok(())
}
