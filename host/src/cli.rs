//! The command line: `run`, `check`, `status`, `dead`, `migrate` and
//! `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::admin::{dead, status};
use crate::config::{Config, Needs, process_env};
use crate::metrics::Metrics;
use crate::plugin::{Compiler, compile};
use crate::shutdown::Shutdown;
use crate::{demo, shutdown, supervisor};

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
    #[arg(long, short, default_value = "queues.toml", global = true)]
    config: PathBuf,
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

#[derive(Debug, Subcommand)]
enum DeadAction {
    /// The dead letters that match, newest first.
    List {
        #[command(flatten)]
        filter: DeadFilter,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter whole: its record, failed attempts and message.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on the stream they came from (their queue's,
    /// or the ingress), as new messages with the same message id.
    Replay {
        /// Dead-letter ids, as `list` shows them.
        ids: Vec<String>,
        /// Every dead letter that matches the filters instead.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        filter: DeadFilter,
    },
    /// Delete dead letters.
    Purge {
        ids: Vec<String>,
        /// Every dead letter that matches the filters instead.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        filter: DeadFilter,
    },
}

#[derive(Debug, clap::Args)]
struct DeadFilter {
    /// Dead-lettered by this queue (`(router)`: refused by the router).
    #[arg(long)]
    queue: Option<String>,
    /// Whose reason contains this text (ignoring case).
    #[arg(long)]
    reason: Option<String>,
    /// Of this message type.
    #[arg(long = "type")]
    message_type: Option<String>,
    /// Dead-lettered within this long (`1h`, `30m`, `7d`).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Dead-lettered at least this long ago.
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
}

impl DeadFilter {
    fn filter(self) -> dead::Filter {
        dead::Filter {
            queue: self.queue,
            reason: self.reason,
            since: self.since,
            older_than: self.older_than,
            message_type: self.message_type,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.reason.is_none()
            && self.message_type.is_none()
            && self.since.is_none()
            && self.older_than.is_none()
    }
}

/// The dead letters a replay or purge applies to: the ids given (each
/// checked), or with `--all` every one that matches the filters.
async fn dead_targets(
    conn: &mut redis::aio::ConnectionManager,
    keys: &crate::stream::Keys,
    ids: Vec<String>,
    all: bool,
    filter: DeadFilter,
) -> Result<Vec<String>> {
    if all {
        return dead::matching(conn, keys, &filter.filter()).await;
    }
    if ids.is_empty() {
        anyhow::bail!("name the dead letters (ids as `dead list` shows them), or give --all");
    }
    if !filter.is_empty() {
        anyhow::bail!("the filters choose what --all applies to; with ids, give no filter");
    }
    dead::checked_ids(ids).map_err(anyhow::Error::msg)
}

async fn dead_command(
    config: Config,
    client: redis::Client,
    action: DeadAction,
) -> Result<ExitCode> {
    let keys = crate::stream::Keys::new(&config.host.prefix);
    let mut conn = crate::redis::shared(&client).await?;
    match action {
        DeadAction::List {
            filter,
            limit,
            json,
        } => {
            let found = dead::list(&mut conn, &keys, &filter.filter(), limit).await?;
            if json {
                print_out(&format!("{}\n", dead::list_json(&found)))?;
            } else {
                print_out(&dead::render_list(&found))?;
                print_out(&format!(
                    "{} dead letter{}{}\n",
                    found.len(),
                    if found.len() == 1 { "" } else { "s" },
                    if limit > 0 && found.len() == limit {
                        format!(" (the newest {limit}; --limit 0 lists all)")
                    } else {
                        String::new()
                    }
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadAction::Show { id, json } => {
            dead::checked_id(&id).map_err(anyhow::Error::msg)?;
            let Some(record) = dead::show(&mut conn, &keys, &id).await? else {
                eprintln!("{id} is not a dead letter (replayed or deleted already?)");
                return Ok(ExitCode::FAILURE);
            };
            if json {
                print_out(&format!("{}\n", dead::record_json(&record)))?;
            } else {
                print_out(&dead::render_record(&record))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DeadAction::Replay { ids, all, filter } => {
            let ids = dead_targets(&mut conn, &keys, ids, all, filter).await?;
            let mut failed = false;
            let mut replayed = 0;
            for (id, outcome) in dead::replay(&mut conn, &config, &ids).await? {
                match outcome {
                    dead::Replayed::Done { stream, entry } => {
                        replayed += 1;
                        print_out(&format!("{id}: replayed to {stream} as {entry}\n"))?;
                    }
                    dead::Replayed::Gone => {
                        print_out(&format!(
                            "{id}: not a dead letter (replayed or deleted already)\n"
                        ))?;
                    }
                    dead::Replayed::Refused(why) => {
                        failed = true;
                        print_out(&format!("{id}: not replayed: {why}\n"))?;
                    }
                }
            }
            print_out(&format!("{replayed} replayed\n"))?;
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        DeadAction::Purge { ids, all, filter } => {
            let ids = dead_targets(&mut conn, &keys, ids, all, filter).await?;
            let deleted = dead::purge(&mut conn, &keys, &ids).await?;
            print_out(&format!("{deleted} deleted\n"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(config: &ConfigArg) -> Result<Config> {
    Ok(Config::load(&config.config)?)
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
    let _telemetry = crate::telemetry::init_logging(match cli.command {
        Command::Check { .. } | Command::Dead { .. } => "warn",
        _ => "info",
    });
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
    let result = runtime.block_on(run(cli.command));
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
fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn compiler() -> Result<Compiler> {
    Compiler::this_program()
        .map_err(|e| anyhow::anyhow!("cannot find this program to compile plugins with: {e}"))
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { config, redis } => {
            let client = crate::redis::client(&redis.redis_url)?;
            let config = load(&config)?;
            let stop = Shutdown::new();
            shutdown::on_signals(stop.clone())?;
            supervisor::run(
                config,
                client,
                compiler()?,
                stop,
                Arc::new(Metrics::default()),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => check(&config).await,
        Command::Migrate { config, queue } => {
            // The databases: their secrets and CA files; no plugin is read.
            let config = Config::load_with(&config.config, &process_env, Needs::DATABASES)?;
            let queues: Vec<_> = config
                .queues
                .values()
                .filter(|q| queue.as_deref().is_none_or(|n| n == q.name))
                .filter(|q| q.sql.as_ref().is_some_and(|s| s.migrations.is_some()))
                .collect();
            if queues.is_empty() {
                anyhow::bail!(
                    "no queue{} has a sql.migrations folder",
                    queue.map_or(String::new(), |q| format!(" named {q}"))
                );
            }
            for q in queues {
                let report = crate::migrate::migrate(q).await?;
                for file in &report.applied {
                    print_out(&format!("{}: applied {file}\n", q.name))?;
                }
                print_out(&format!(
                    "{}: {} applied now, {} before\n",
                    q.name,
                    report.applied.len(),
                    report.already
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            config,
            redis,
            dead_letters,
        } => {
            let client = crate::redis::client(&redis.redis_url)?;
            // Names and streams only: status runs without the secrets'
            // environment variables (it never sees their values), and
            // without the plugins built.
            let config = Config::load_with(&config.config, &process_env, Needs::STREAMS)?;
            let mut conn = crate::redis::shared(&client).await?;
            let report = status::read(&mut conn, &config, dead_letters).await?;
            print_out(&report.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dead {
            config,
            redis,
            action,
        } => {
            let client = crate::redis::client(&redis.redis_url)?;
            // Names and streams only: no secret, no file, no plugin.
            let config = Config::load_with(&config.config, &process_env, Needs::STREAMS)?;
            dead_command(config, client, action).await
        }
        Command::Demo {
            config,
            redis_url,
            events,
        } => {
            // Secrets the environment lacks get made-up values: the demo's
            // stand-ins for the remote APIs accept whatever it holds.
            let text = crate::files::read_text(&config.config, crate::config::MAX_CONFIG_BYTES)
                .unwrap_or_default();
            let config = Config::load_with_env(&config.config, &demo::secrets_for(&text))?;
            demo::run(config, redis_url, &events, compiler()?).await?;
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
    for w in &config.warnings {
        println!("warning: {w}");
    }
    let engine = supervisor::engine(&config, compiler()?)?;
    let metrics = Metrics::default();
    match supervisor::prepare(&engine, &config, &Default::default(), &metrics).await {
        Ok(plugins) => {
            for queue in config.queues.values() {
                if let Some(plugin) = plugins.get(&queue.plugin) {
                    for warning in supervisor::missing_grants(plugin, queue) {
                        println!("warning: {warning}");
                    }
                }
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
        Err(refusals) => {
            eprintln!(
                "{} refused ({} problem{}):",
                config.path.display(),
                refusals.0.len(),
                if refusals.0.len() == 1 { "" } else { "s" }
            );
            for r in &refusals.0 {
                // A refusal may quote the compiler or the plugin's own names.
                eprintln!("  {}", crate::text::Escaped(&r.to_string()));
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
