//! Benchmark: the shipped Persistence plugin against a native writer, and
//! mail through a pooled relay against one connection per mail.
//!
//! - SQL: a backlog of chat events (the demo's sample types, each with
//!   keys of its own so no two messages write the same row) drained by
//!   the `persistence` plugin, and by a native handler registered in this
//!   program that runs the same statements (`chat_events::store::plan`) in
//!   one transaction through the same queue's pool (`CallSql`) on the same
//!   private PostgreSQL. The tables are emptied between runs. The server
//!   runs with `fsync=off`: the figures are the CPU cost of the path, not
//!   the disk's.
//! - Mail: the `bench-io` plugin sending one mail per message to a local
//!   SMTP receiver, with the relay's connections pooled (`pool = 4`) and
//!   with one connection per mail (`pool = 0`).
//!
//! Run with:
//!
//! ```text
//! ./scripts/build-plugins.sh
//! cargo run --release -p switchyard-bench --bin store
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use switchyard::plugin::sql::{CallSql, Value};
use switchyard::plugin::{CallContext, Delivery, Outcome};
use switchyard_bench::{median, rate, run_until_handled, spread};
use switchyard_standins::postgres::Postgres;
use switchyard_standins::smtp::SmtpReceiver;
use switchyard_tests::{Redis, TestConfig, repo_root};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Messages of each SQL run.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Handler concurrency of the Persistence queue.
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Connections of the queue's pool.
    #[arg(long, default_value_t = 8)]
    pool: u32,
    /// Mails of each mail run.
    #[arg(long, default_value_t = 5_000)]
    mails: usize,
    /// Rounds of each measurement; figures are medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these sections (sql, mail); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The native writer: what the plugin does, in Rust in the host.
fn native_persistence<'a>(
    cx: &'a CallContext,
    message: &'a Delivery,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'a>> {
    use chat_events::store::{self, Param};
    Box::pin(async move {
        let plan = match store::plan(&message.id, &message.message_type, &message.body) {
            Ok(plan) => plan,
            Err(e) => {
                return Outcome::Reject {
                    reason: e.to_string(),
                };
            }
        };
        let mut sql = CallSql {
            queue: cx.sql.clone(),
            deadline: Some(Instant::now() + cx.timeout),
            transaction: None,
        };
        let result = async {
            sql.begin().await?;
            for statement in plan {
                let params: Vec<Value> = statement
                    .params
                    .into_iter()
                    .map(|p| match p {
                        Param::Null => Value::Null,
                        Param::Bool(b) => Value::Boolean(b),
                        Param::Int32(n) => Value::Int32(n),
                        Param::Int64(n) => Value::Int64(n),
                        Param::Float(f) => Value::Floating64(f),
                        Param::Text(s) => Value::Str(s),
                    })
                    .collect();
                sql.run(statement.sql, &params, false).await?;
            }
            sql.end("COMMIT").await
        }
        .await;
        sql.finish();
        match result {
            Ok(()) => Outcome::Success,
            Err(e) => Outcome::Retry {
                reason: e.to_string(),
                delay: None,
            },
        }
    })
}

/// The demo's valid sample events, as (type, body).
fn samples() -> Result<Vec<(String, String)>> {
    let events = switchyard_cli::demo::read_events(&repo_root().join("demo/events.jsonl"))?;
    let mut out = Vec::new();
    for fields in events {
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let (Some(t), Some(id), Some(body)) = (get("type"), get("id"), get("body"))
            && !id.starts_with("demo-bad")
            && t != "chat.started"
        {
            out.push((t, body));
        }
    }
    Ok(out)
}

/// Sample `n % samples` with keys of its own: its chat, conversion and
/// agent numbered `n`.
fn event(samples: &[(String, String)], n: usize) -> (String, String) {
    let (t, body) = &samples[n % samples.len()];
    let body = body
        .replace("\"c-8f2a\"", &format!("\"c-{n}\""))
        .replace("\"Id\":1,", &format!("\"Id\":{},", n + 1))
        .replace("\"AgentId\":12", &format!("\"AgentId\":{}", n + 1000));
    (t.clone(), body)
}

fn sql_config(plugin: &str, url: &str, types: &[(String, String)], a: &Args) -> TestConfig {
    let routes: String = types
        .iter()
        .map(|(t, _)| format!("\"{t}\" = [\"Persistence\"]\n"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    TestConfig::with_env(
        &format!(
            "[host]\nprefix = \"@PREFIX@\"\nshutdown_timeout = \"5s\"\n\
             [ingress]\nstream = \"@PREFIX@:ingress\"\nbatch = 512\n\
             [routes]\n{routes}\
             [queues.Persistence]\nplugin = \"{plugin}\"\nconcurrency = {}\nhandler_timeout = \"10s\"\n\
             [queues.Persistence.sql]\ndatabase_url = {{ env = \"DB\" }}\npool = {}\ntimeout = \"10s\"\n\
             migrations = \"{}\"\n",
            a.concurrency,
            a.pool,
            repo_root().join("plugins/persistence/migrations").display()
        ),
        &[("DB", url)],
    )
}

/// Fills the ingress of `cfg` with `n` events.
async fn fill_events(
    redis: &Redis,
    cfg: &TestConfig,
    samples: &[(String, String)],
    n: usize,
) -> Result<()> {
    let mut conn = redis.conn().await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let (t, body) = event(samples, i);
            pipe.cmd("XADD")
                .arg(cfg.ingress())
                .arg("*")
                .arg("type")
                .arg(t)
                .arg("id")
                .arg(format!("bench-{i}"))
                .arg("body")
                .arg(body)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
    }
    Ok(())
}

async fn drain(redis: &Redis, cfg: &TestConfig, n: usize) -> Result<Duration> {
    run_until_handled(redis, cfg, n as u64).await
}

async fn sql(a: &Args, redis: &Redis) -> Result<()> {
    let pg = tokio::task::spawn_blocking(|| Postgres::start("chat"))
        .await?
        .context("starting PostgreSQL")?;
    let samples = samples()?;
    let setup = sql_config("builtin:persistence-native", &pg.url(), &samples, a);
    switchyard::migrate::migrate(&setup.config.queues["Persistence"]).await?;
    let tables = pg.psql(
        "SELECT string_agg(table_name, ', ') FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> 'switchyard_migrations'",
    );
    println!(
        "\nSQL: {} chat events ({} types, the demo's samples) per run, concurrency {}, pool {}, \
         PostgreSQL with fsync=off; {} rounds, each handler in turn",
        a.messages,
        samples.len(),
        a.concurrency,
        a.pool,
        a.rounds
    );
    let handlers = [
        (
            "native writer (same statements, same pool)",
            "builtin:persistence-native",
        ),
        (
            "persistence plugin, fresh instance",
            "@PLUGINS@/persistence.wasm",
        ),
    ];
    let mut messages = vec![Vec::new(); handlers.len()];
    let mut rows = vec![Vec::new(); handlers.len()];
    for _ in 0..a.rounds {
        for (i, (_, plugin)) in handlers.iter().enumerate() {
            pg.psql(&format!("TRUNCATE {tables}"));
            let cfg = sql_config(plugin, &pg.url(), &samples, a);
            fill_events(redis, &cfg, &samples, a.messages).await?;
            let took = drain(redis, &cfg, a.messages).await?;
            let stored: usize = pg
                .psql(&format!(
                    "SELECT {}",
                    tables
                        .split(", ")
                        .map(|t| format!("(SELECT count(*) FROM {t})"))
                        .collect::<Vec<_>>()
                        .join(" + ")
                ))
                .parse()?;
            messages[i].push(rate(a.messages, took));
            rows[i].push(rate(stored, took));
        }
    }
    println!(
        "{:<46} {:>24} {:>24} {:>8}",
        "handler", "messages/s", "rows/s", "ratio"
    );
    for (i, (label, _)) in handlers.iter().enumerate() {
        let ratios: Vec<f64> = (0..a.rounds).map(|r| rows[i][r] / rows[0][r]).collect();
        println!(
            "{label:<46} {:>24} {:>24} {:>8.3}",
            spread(&messages[i]),
            spread(&rows[i]),
            median(ratios)
        );
    }
    Ok(())
}

fn mail_config(url: &str, pool: u32, concurrency: u32) -> TestConfig {
    TestConfig::new(&format!(
        "[host]\nprefix = \"@PREFIX@\"\nshutdown_timeout = \"5s\"\n\
         [ingress]\nstream = \"@PREFIX@:ingress\"\nbatch = 512\n\
         [routes]\n\"bench\" = [\"Work\"]\n\
         [queues.Work]\nplugin = \"@PLUGINS@/bench_io.wasm\"\nconcurrency = {concurrency}\n\
         [queues.Work.mail]\nsmtp_url = \"{url}\"\npool = {pool}\n\
         [queues.Work.config]\ndo = \"mail\"\nfrom = \"bench@chat.example\"\nto = \"inbox@chat.example\"\n"
    ))
}

async fn mail(a: &Args, redis: &Redis) -> Result<()> {
    let smtp = SmtpReceiver::start().await?;
    let concurrency = 4;
    println!(
        "\nMail: one mail per message (the plugin `bench-io`) to a local SMTP receiver, \
         concurrency {concurrency}, {} mails per run; {} rounds",
        a.mails, a.rounds
    );
    let cases = [
        ("pooled (pool = 4)", 4),
        ("one connection per mail (pool = 0)", 0),
    ];
    let mut rates = vec![Vec::new(); cases.len()];
    let mut connections = vec![0; cases.len()];
    for _ in 0..a.rounds {
        for (i, (_, pool)) in cases.iter().enumerate() {
            let cfg = mail_config(&smtp.url(), *pool, concurrency);
            let mut conn = redis.conn().await;
            switchyard_bench::fill(&mut conn, cfg.ingress(), 0, a.mails, 256).await?;
            let before = smtp.connections();
            rates[i].push(rate(a.mails, drain(redis, &cfg, a.mails).await?));
            connections[i] = smtp.connections() - before;
        }
    }
    println!(
        "{:<40} {:>24} {:>8} {:>12}",
        "relay connections", "mails/s", "ratio", "connections"
    );
    for (i, (label, _)) in cases.iter().enumerate() {
        let ratios: Vec<f64> = (0..a.rounds).map(|r| rates[i][r] / rates[0][r]).collect();
        println!(
            "{label:<40} {:>24} {:>8.3} {:>12}",
            spread(&rates[i]),
            median(ratios),
            connections[i]
        );
    }
    Ok(())
}

fn main() -> Result<std::process::ExitCode> {
    // The embedded host compiles plugins with this same program.
    if let Some(code) = switchyard::plugin::compile::serve_if_asked() {
        return Ok(code);
    }
    switchyard::plugin::register_native("persistence-native", Arc::new(native_persistence));
    tokio::runtime::Runtime::new()?.block_on(run())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn run() -> Result<()> {
    let a = Args::parse();
    let redis = Redis::start();
    let wants = |s: &str| a.only.is_empty() || a.only.iter().any(|o| o == s);
    println!(
        "machine: {} cores; redis-server, PostgreSQL and the SMTP receiver beside the host",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if wants("sql") {
        sql(&a, &redis).await?;
    }
    if wants("mail") {
        mail(&a, &redis).await?;
    }
    Ok(())
}
