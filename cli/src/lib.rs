//! The `switchyard` command line: `run`, `check`, `status`, `dead`,
//! `migrate` and `demo`. The host itself is the `switchyard` library; this
//! package adds the arguments, the output and the local demo.
//!
//! - [`check`]: a configuration validated and its plugins compiled;
//! - [`dead`]: dead-letter inspection, replay and purge;
//! - [`demo`]: the local end-to-end demo with stand-in services;
//! - [`migrate`]: a queue's schema migrations applied;
//! - [`progress`]: how far a long command got.

mod check;
mod dead;
pub mod demo;
mod invoke;
mod invoke_log;
mod migrate;
mod new;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use switchyard::admin::status;
use switchyard::config::{Config, Needs, process_env};
use switchyard::metrics::Metrics;
use switchyard::plugin::{Compiler, compile};
use switchyard::redis::{Access, Endpoint, Redis};
use switchyard::shutdown::{self, Shutdown};
use switchyard::supervisor;

use dead::DeadAction;

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
pub(crate) struct ConfigArg {
    /// The routing and queue configuration.
    #[arg(long, short, default_value = "queues.toml", global = true)]
    pub(crate) config: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RedisArg {
    /// Redis to use.
    #[arg(
        long,
        env = "SWITCHYARD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/",
        global = true
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
        /// Check this plugin file alone, against every contract version.
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// With --plugin: `queues.toml#Queue`, whose grants its imports
        /// are checked against.
        #[arg(long, requires = "plugin")]
        queue: Option<String>,
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
    /// List, show, replay and delete dead letters.
    Dead {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        redis: RedisArg,
        #[command(subcommand)]
        action: DeadAction,
    },
    /// Apply the schema migrations of every queue that has a
    /// `sql.migrations` folder (or of one queue) to its database.
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
    },
    /// Run a plugin on one message as a queue would, without Redis; print
    /// what came of it. Exit status: 0 success, 3 retry, 4 reject, 5 a
    /// failed call (trap, timeout, memory cap), 1 the plugin did not load.
    Invoke(invoke::InvokeArgs),
    /// Make a plugin project in Rust, Python or JavaScript: a CRM plugin
    /// (HTTP, key-value, publish) that builds, passes its own tests and
    /// comes with a queues.toml snippet and a sample event.
    New(new::NewArgs),
    /// Print the chat payloads' types for Python or TypeScript, generated
    /// from their JSON Schema.
    Types {
        #[arg(long, value_enum)]
        lang: new::TypesLang,
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

fn load(config: &ConfigArg) -> Result<Config> {
    Ok(Config::load(&config.config)?)
}

/// The Redis deployment `url` names, with what `[redis]` adds.
pub(crate) fn redis(url: &str, config: &Config) -> Result<Redis> {
    let endpoint = Endpoint::parse(url, &Access::of(&config.redis))?;
    Redis::new(endpoint)
}

/// Entry point of the `switchyard` binary.
pub fn main() -> ExitCode {
    // A compile the host started in a child process: no runtime, no
    // logging, stdout is the output.
    if let Some(code) = compile::serve_if_asked() {
        return code;
    }
    let cli = Cli::parse();
    // `check` reports on stdout and stderr itself; its log shows only what
    // goes wrong.
    // `invoke` shows the plugin's log lines in its report.
    let mut capture = None;
    let _telemetry = match cli.command {
        Command::Invoke(_) => {
            capture = Some(invoke_log::init());
            None
        }
        Command::Check { .. } | Command::Dead { .. } | Command::New(_) | Command::Types { .. } => {
            Some(switchyard::telemetry::init_logging("warn"))
        }
        _ => Some(switchyard::telemetry::init_logging("info")),
    };
    // Connections (Redis, plugins' HTTP, SQL and mail pools, the admin
    // server's clients) each take a file descriptor; the soft limit is
    // often 1,024 where the hard one is far higher.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(error = %e, "Could not raise the limit of open files.");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, capture.unwrap_or_default()));
    // What is still running (a handler past the shutdown timeout) is
    // abandoned: its message stays pending.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a reader that stopped early (`status | head`) is not an
/// error.
pub(crate) fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

pub(crate) fn compiler() -> Result<Compiler> {
    Compiler::this_program()
        .map_err(|e| anyhow::anyhow!("cannot find this program to compile plugins with: {e}"))
}

async fn run(command: Command, capture: invoke_log::Capture) -> Result<ExitCode> {
    match command {
        Command::Invoke(args) => invoke::invoke(args, capture).await,
        Command::New(args) => new::new(args),
        Command::Types { lang } => new::types(lang),
        Command::Run { config, redis: url } => {
            // A URL that is no Redis URL is said before anything else.
            Endpoint::parse(&url.redis_url, &Default::default())?;
            let config = load(&config)?;
            let redis = redis(&url.redis_url, &config)?;
            let stop = Shutdown::new();
            shutdown::on_signals(stop.clone())?;
            supervisor::run(
                config,
                redis,
                compiler()?,
                stop,
                Arc::new(Metrics::default()),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            plugin: Some(plugin),
            queue,
            ..
        } => check::check_plugin(&plugin, queue.as_deref()).await,
        Command::Check { config, .. } => check::check(&config).await,
        Command::Migrate { config, queue } => migrate::migrate(&config.config, queue).await,
        Command::Status {
            config,
            redis: url,
            dead_letters,
        } => {
            // Names and streams only: status runs without the secrets'
            // environment variables but Redis's (it never sees their
            // values), and without the plugins built.
            let config = Config::load_with(&config.config, &process_env, Needs::STREAMS)?;
            let redis = redis(&url.redis_url, &config)?;
            let mut conn = redis.connect().await?;
            let keys = switchyard::stream::Keys::of(&config, redis.is_cluster());
            let report = status::read(&mut conn, &config, &keys, dead_letters).await?;
            print_out(&report.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dead {
            config,
            redis: url,
            action,
        } => {
            // Names and streams only: no secret but Redis's, no file, no
            // plugin.
            let config = Config::load_with(&config.config, &process_env, Needs::STREAMS)?;
            let redis = redis(&url.redis_url, &config)?;
            dead::dead_command(config, redis, action).await
        }
        Command::Demo {
            config,
            redis_url,
            events,
        } => {
            // Secrets the environment lacks get made-up values: the demo's
            // stand-ins for the remote APIs accept whatever it holds.
            let text =
                switchyard::files::read_text(&config.config, switchyard::config::MAX_CONFIG_BYTES)
                    .unwrap_or_default();
            let config = Config::load_with_env(&config.config, &demo::secrets_for(&text))?;
            demo::run(config, redis_url, &events, compiler()?).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
