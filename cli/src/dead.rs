//! `switchyard dead`: list, show, replay and purge dead letters.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use switchyard::admin::dead;
use switchyard::config::Config;
use switchyard::redis::{Conn, Redis};
use switchyard::stream::{Keys, Partition};

use crate::print_out;
use crate::progress::Progress;

/// Dead letters replayed or deleted between two updates of the progress:
/// a purge deletes them in one XDEL, the size of a dead-letter search's
/// page, so one step never holds Redis longer than a search does.
const STEP: usize = 100;

#[derive(Debug, Subcommand)]
pub(crate) enum DeadAction {
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
pub(crate) struct DeadFilter {
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
    conn: &mut Conn,
    partitions: &[Partition],
    ids: Vec<String>,
    all: bool,
    filter: DeadFilter,
) -> Result<Vec<String>> {
    if all {
        return dead::matching(conn, partitions, &filter.filter()).await;
    }
    if ids.is_empty() {
        anyhow::bail!("name the dead letters (ids as `dead list` shows them), or give --all");
    }
    if !filter.is_empty() {
        anyhow::bail!("the filters choose what --all applies to; with ids, give no filter");
    }
    Ok(dead::checked_ids(ids)?)
}

pub(crate) async fn dead_command(
    config: Config,
    redis: Redis,
    action: DeadAction,
) -> Result<ExitCode> {
    let keys = Keys::of(&config, redis.is_cluster());
    let mut conn = redis.connect().await?;
    let partitions = dead::partitions(&mut conn, &config, &keys).await?;
    match action {
        DeadAction::List {
            filter,
            limit,
            json,
        } => {
            let found = dead::list(&mut conn, &partitions, &filter.filter(), limit).await?;
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
            dead::checked_id(&id)?;
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
            let ids = dead_targets(&mut conn, &partitions, ids, all, filter).await?;
            let (mut replayed, mut gone, mut refused) = (0, 0, 0);
            let mut progress = Progress::new("replay", ids.len() as u64);
            for chunk in ids.chunks(STEP) {
                for (id, outcome) in dead::replay(&mut conn, &config, &keys, chunk).await? {
                    match outcome {
                        dead::Replayed::Done { stream, entry } => {
                            replayed += 1;
                            progress
                                .println(&format!("{id}: replayed to {stream} as {entry}\n"))?;
                        }
                        dead::Replayed::Gone => {
                            gone += 1;
                            progress.println(&format!(
                                "{id}: not a dead letter (replayed or deleted already)\n"
                            ))?;
                        }
                        dead::Replayed::Refused(why) => {
                            refused += 1;
                            progress.println(&format!("{id}: not replayed: {why}\n"))?;
                        }
                    }
                }
                progress.advance(chunk.len() as u64);
            }
            progress.finish();
            let mut summary = format!("{replayed} replayed");
            if gone > 0 {
                summary.push_str(&format!(", {gone} gone already"));
            }
            if refused > 0 {
                summary.push_str(&format!(", {refused} refused"));
            }
            print_out(&format!("{summary}\n"))?;
            Ok(if refused > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        DeadAction::Purge { ids, all, filter } => {
            let ids = dead_targets(&mut conn, &partitions, ids, all, filter).await?;
            let mut deleted = 0;
            let mut progress = Progress::new("purge", ids.len() as u64);
            for chunk in ids.chunks(STEP) {
                deleted += dead::purge(&mut conn, &keys, chunk).await?;
                progress.advance(chunk.len() as u64);
            }
            progress.finish();
            let gone = ids.len() as u64 - deleted.min(ids.len() as u64);
            if gone > 0 {
                print_out(&format!("{deleted} deleted, {gone} gone already\n"))?;
            } else {
                print_out(&format!("{deleted} deleted\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
