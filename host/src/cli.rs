//! The command line: `run`, `check`, `status` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::admin::{metrics::Metrics, status};
use crate::config::Config;
use crate::{demo, host, redis_conn, shutdown};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Runs WebAssembly message handlers on Redis Streams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The routing and queue configuration.
    #[arg(long, short, default_value = "queues.toml")]
    config: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RedisArg {
    /// Redis to use.
    #[arg(
        long,
        env = "SWITCHYARD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Route the ingress stream and run every queue's handlers until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        redis: RedisArg,
    },
    /// Validate the configuration and compile every plugin, without starting.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show what waits, runs and was dead-lettered in every stream.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        redis: RedisArg,
        /// How many recent dead letters to show.
        #[arg(long, default_value_t = 10)]
        dead_letters: usize,
    },
    /// Run a local demo: a private redis-server (unless --redis-url or
    /// SWITCHYARD_REDIS_URL is given), sample chat events, a summary.
    Demo {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, env = "SWITCHYARD_REDIS_URL")]
        redis_url: Option<String>,
        /// Sample events, one JSON object of stream fields per line.
        #[arg(long, default_value = "demo/events.jsonl")]
        events: PathBuf,
    },
}

/// Logs to stderr, one write per event (so a killed host loses no line it
/// logged), in color only on a terminal; `RUST_LOG` overrides the default
/// level (info).
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn load(config: &ConfigArg) -> Result<Config> {
    Ok(Config::load(&config.config)?)
}

/// Entry point of the `switchyard` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config, redis } => {
            let config = load(&config)?;
            let client =
                redis::Client::open(redis.redis_url.as_str()).context("parsing the Redis URL")?;
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone())?;
            host::run(config, client, token, Arc::new(Metrics::default())).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => check(&config).await,
        Command::Status {
            config,
            redis,
            dead_letters,
        } => {
            let config = load(&config)?;
            let client =
                redis::Client::open(redis.redis_url.as_str()).context("parsing the Redis URL")?;
            let mut conn = redis_conn::shared(&client).await?;
            print!("{}", status::read(&mut conn, &config, dead_letters).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            config,
            redis_url,
            events,
        } => {
            demo::run(load(&config)?, redis_url, &events).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Validates a configuration exactly as `run` would before starting: the
/// file, then every plugin compiled and checked against the contract.
async fn check(config: &ConfigArg) -> Result<ExitCode> {
    let config = match Config::load(&config.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let engine = host::engine(&config)?;
    let metrics = Metrics::default();
    match host::prepare(&engine, &config, &Default::default(), &metrics).await {
        Ok(plugins) => {
            for queue in config.queues.values() {
                let routed = config.routes.values().any(|qs| qs.contains(&queue.name));
                if !routed {
                    println!(
                        "warning: queues.{}: no message type routes to this queue",
                        queue.name
                    );
                }
            }
            println!(
                "{}: OK ({} message types, {} queues, {} plugins)",
                config.path.display(),
                config.routes.len(),
                config.queues.len(),
                plugins.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: refused:\n{e}", config.path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}
