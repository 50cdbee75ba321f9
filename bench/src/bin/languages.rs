//! Benchmark: the CRM plugin that `switchyard new` makes (an HTTP POST to
//! a local server, a key-value increment and a follow-up publish per
//! message), built in Rust, Python and JavaScript, each with a fresh
//! instance per message and with reused instances; beside the host's
//! native `builtin:http-post` handler POSTing the same messages through
//! the same queue client, measured in the same run (ratio 1).
//!
//! ```text
//! ./scripts/setup-polyglot.sh && cargo build --release -p switchyard-cli
//! cd target && for l in rust python js; do ./release/switchyard new crm-$l --lang $l; done
//! (cd crm-rust && cargo build --release --target wasm32-wasip2)
//! (cd crm-python && tools/python/bin/componentize-py -d wit -w plugin componentize app -o crm_python.wasm)
//! (cd crm-js && ln -s ../../plugins/js-forward/node_modules && npm run build)
//! cd .. && cargo run --release -p switchyard-bench --bin languages -- \
//!   --rust target/crm-rust/target/wasm32-wasip2/release/crm_rust.wasm \
//!   --python target/crm-python/crm_python.wasm --js target/crm-js/crm_js.wasm
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use redis::aio::MultiplexedConnection;
use switchyard_bench::{median, rate, run_until_handled, spread};
use switchyard_standins::{Api, StandIn};
use switchyard_tests::{Redis, TestConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// The Rust project's built plugin.
    #[arg(long)]
    rust: PathBuf,
    /// The Python project's built plugin.
    #[arg(long)]
    python: PathBuf,
    /// The JavaScript project's built plugin.
    #[arg(long)]
    js: PathBuf,
    /// Messages of each run with fresh instances.
    #[arg(long, default_value_t = 3_000)]
    fresh_messages: usize,
    /// Messages of each run with reused instances.
    #[arg(long, default_value_t = 10_000)]
    reused_messages: usize,
    /// Handler concurrency of the queue.
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Only the runs whose label contains one of these (the native
    /// baseline always runs).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Rounds; figures are medians, ratios each round's to its native run.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// The `switchyard new` projects' sample chat, on ten sites.
const CHAT: &str = r#"{"ChatGuid": "c-8f2a", "SessionId": 900001, "SiteId": SITE, "AgentIds": [7], "Start": "2026-11-22T09:01:00", "End": "2026-11-22T09:14:30", "PreChatName": "Ada", "PreChatEmail": "ada@example.com", "Messages": [{"Id": 1, "SenderType": 0, "SenderName": "Ada", "Message": "Hello", "Time": "2026-11-22T09:01:10"}]}"#;

async fn fill(conn: &mut MultiplexedConnection, stream: &str, n: usize) -> Result<()> {
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("type")
                .arg("chat.ended")
                .arg("id")
                .arg(format!("m-{i}"))
                .arg("body")
                .arg(CHAT.replace("SITE", &(1000 + i % 10).to_string()))
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}

/// A queue `Crm` running `plugin` (or the native POST), its follow-ups
/// routed to a native no-op queue.
fn config(plugin: &str, reuse: bool, url: &str, concurrency: u32) -> TestConfig {
    TestConfig::new(&format!(
        "[host]\nprefix = \"@PREFIX@\"\nshutdown_timeout = \"5s\"\n\
         [ingress]\nstream = \"@PREFIX@:ingress\"\nbatch = 512\n\
         [routes]\n\"chat.ended\" = [\"Crm\"]\n\"crm.synced\" = [\"Sink\"]\n\
         [queues.Crm]\nplugin = \"{plugin}\"\nconcurrency = {concurrency}\nreuse_instances = {reuse}\n\
         allowed_hosts = [\"{url}\"]\nmax_connections_per_host = {concurrency}\n\
         keyvalue = {{}}\npublish = [\"crm.synced\"]\n\
         [queues.Crm.config]\nurl = \"{url}/chats\"\n\
         [queues.Sink]\nplugin = \"builtin:noop\"\nconcurrency = {concurrency}\n"
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    for p in [&a.rust, &a.python, &a.js] {
        if !p.is_file() {
            bail!(
                "{} is not built (see the comment at the top of languages.rs)",
                p.display()
            );
        }
    }
    let server = StandIn::start(Api::Echo).await?;
    let url = server.url();
    let redis = Redis::start();
    let path = |p: &PathBuf| p.canonicalize().unwrap().display().to_string();
    // (label, plugin, reused, messages each, expected handled)
    let runs: Vec<(String, String, bool, usize, u64)> = {
        let mut runs = vec![(
            "native builtin:http-post (POST only)".to_owned(),
            "builtin:http-post".to_owned(),
            false,
            a.reused_messages,
            a.reused_messages as u64,
        )];
        for (lang, p) in [
            ("Rust", &a.rust),
            ("Python", &a.python),
            ("JavaScript", &a.js),
        ] {
            for reuse in [false, true] {
                let n = if reuse {
                    a.reused_messages
                } else {
                    a.fresh_messages
                };
                let how = if reuse { "reused" } else { "fresh" };
                runs.push((
                    format!("{lang} CRM plugin, {how}"),
                    path(p),
                    reuse,
                    n,
                    2 * n as u64,
                ));
            }
        }
        runs.retain(|(label, plugin, ..)| {
            plugin.starts_with("builtin:")
                || a.only.is_empty()
                || a.only
                    .iter()
                    .any(|o| label.to_lowercase().contains(&o.to_lowercase()))
        });
        runs
    };
    println!(
        "CRM plugin (POST, key-value increment, publish) per message; concurrency {}; {} rounds",
        a.concurrency, a.rounds
    );
    let mut rates = vec![Vec::new(); runs.len()];
    for round in 0..a.rounds {
        for (i, (label, plugin, reuse, n, expected)) in runs.iter().enumerate() {
            let cfg = config(plugin, *reuse, &url, a.concurrency);
            let mut conn = redis.conn().await;
            fill(&mut conn, cfg.ingress(), *n).await?;
            let took = run_until_handled(&redis, &cfg, *expected).await?;
            rates[i].push(rate(*n, took));
            eprintln!("round {round}: {label}: {:.0} msg/s", rate(*n, took));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!("{:<44} {:>28} {:>8}", "handler", "messages/s", "ratio");
    for (i, (label, ..)) in runs.iter().enumerate() {
        let ratios: Vec<f64> = (0..a.rounds).map(|r| rates[i][r] / rates[0][r]).collect();
        println!(
            "{label:<44} {:>28} {:>8.3}",
            spread(&rates[i]),
            median(ratios)
        );
    }
    Ok(())
}
