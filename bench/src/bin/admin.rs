//! Benchmark: what the admin server costs the message path. A backlog is
//! drained by the no-op plugin with the admin server off, then on and
//! scraped ten times a second (`/metrics` and the dashboard's
//! `/api/overview`, far more often than Prometheus or a browser would),
//! then on and abused (1,000 connections that send half a request and
//! stop, and two clients requesting `/metrics`, `/api/overview` and a
//! dead-letter search as fast as they are answered), in turn for a few
//! rounds on the same redis-server.
//!
//!     ./scripts/build-plugins.sh
//!     cargo run --release -p switchyard-bench --bin admin

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use switchyard::supervisor::RunningHost;
use switchyard_bench::{fill, median, rate, wait_handled};
use switchyard_tests::{Redis, TestConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn config(port: Option<u16>, concurrency: u32) -> TestConfig {
    let admin = port.map_or(String::new(), |p| {
        format!("[admin]\nlisten = \"127.0.0.1:{p}\"\nstats_interval = \"1s\"\n")
    });
    TestConfig::with_env(
        &format!(
            "[host]\nprefix = \"@PREFIX@\"\nshutdown_timeout = \"5s\"\n[ingress]\nstream = \"@PREFIX@:ingress\"\nbatch = 512\n{admin}\
         [routes]\n\"bench\" = [\"Work\"]\n[queues.Work]\nplugin = \"@PLUGINS@/noop.wasm\"\nconcurrency = {concurrency}\n"
        ),
        &[("SWITCHYARD_ADMIN_READ_TOKEN", TOKEN)],
    )
}

/// The dashboard's read-only token in the benchmark.
const TOKEN: &str = "bench-reader";

fn get(port: u16, path: &str) -> usize {
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let mut body = Vec::new();
    let _ = tcp.read_to_end(&mut body);
    body.len()
}

/// How the admin server is used during a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Off,
    Scraped,
    Abused,
}

async fn drain(redis: &Redis, a: &Args, load: Load) -> Result<(f64, u64)> {
    let admin = load != Load::Off;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let cfg = config(admin.then_some(port), a.concurrency);
    let mut conn = redis.conn().await;
    fill(&mut conn, cfg.ingress(), 0, a.messages, 256).await?;
    let started = Instant::now();
    let host = RunningHost::start(
        cfg.config.clone(),
        switchyard_tests::deployment(redis.url(), &cfg.config),
        switchyard::plugin::Compiler::this_program()?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let clients = match load {
        Load::Off => 0,
        Load::Scraped => 1,
        Load::Abused => 2,
    };
    let scrapers: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, scrapes) = (stop.clone(), scrapes.clone());
            std::thread::spawn(move || {
                let mut stalled = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if load == Load::Abused && stalled.len() < 500 {
                        for _ in 0..100 {
                            if let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                                let _ = tcp.write_all(b"GET /healthz HTTP/1.1\r\nHo");
                                stalled.push(tcp);
                            }
                        }
                    }
                    if get(port, "/metrics") > 0 && get(port, "/api/overview") > 0 {
                        scrapes.fetch_add(1, Ordering::Relaxed);
                    }
                    if load == Load::Abused {
                        get(port, "/api/dead?reason=nothing%20matches");
                    } else {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        })
        .collect();
    wait_handled(&host, a.messages as u64, Duration::from_secs(600)).await?;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for s in scrapers {
        let _ = s.join();
    }
    host.stop().await?;
    Ok((rate(a.messages, took), scrapes.load(Ordering::Relaxed)))
}

fn main() -> Result<std::process::ExitCode> {
    if let Some(code) = switchyard::plugin::compile::serve_if_asked() {
        return Ok(code);
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        let a = Args::parse();
        let redis = Redis::start();
        let (mut off, mut on, mut ratios, mut scrapes) = (Vec::new(), Vec::new(), Vec::new(), 0);
        let (mut abused, mut abused_ratios, mut abuses) = (Vec::new(), Vec::new(), 0);
        for _ in 0..a.rounds {
            let (without, _) = drain(&redis, &a, Load::Off).await?;
            let (with, n) = drain(&redis, &a, Load::Scraped).await?;
            let (under, m) = drain(&redis, &a, Load::Abused).await?;
            off.push(without);
            on.push(with);
            abused.push(under);
            ratios.push(with / without);
            abused_ratios.push(under / without);
            scrapes += n;
            abuses += m;
        }
        println!(
            "{} messages, no-op plugin, concurrency {}, {} rounds (median)",
            a.messages, a.concurrency, a.rounds
        );
        println!("admin server off:                        {:>8.0} messages/s", median(off));
        println!(
            "admin server on, scraped 10 times a second: {:>8.0} messages/s  ratio {:.3}  ({scrapes} scrapes)",
            median(on),
            median(ratios)
        );
        println!(
            "admin server on, abused (500 stalled connections, 2 clients flat out): {:>8.0} messages/s  ratio {:.3}  ({abuses} rounds of requests)",
            median(abused),
            median(abused_ratios)
        );
        anyhow::Ok(())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}
