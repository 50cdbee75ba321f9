//! Searching the dead letters of every partition, newest first, within a
//! bound on the work one search makes Redis do.
//!
//! Each partition has a dead-letter stream of its own; a search reads a
//! page of each at a time and merges them by time (a dead letter's id is
//! when it was written), ties broken by partition, so that "below this
//! one" means the same whichever partition a dead letter is in.

use std::collections::VecDeque;
use std::time::SystemTime;

use anyhow::{Context, Result};
use redis::Value;
use redis::aio::ConnectionLike;

use super::{Filter, PAGE, SUMMARY_BYTES};
use crate::admin::status::{DeadLetter, entry_time};
use crate::redis::scripts::DEAD_PAGE;
use crate::stream::layout::split_dead_letter_ref;
use crate::stream::{Entry, Partition, parse_entries};

/// How much of the dead-letter streams one search may read.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    /// Dead letters read per script call: what Redis does in one go.
    pub page: usize,
    /// Dead letters examined in all (`0`: no bound).
    pub max_examined: usize,
    /// Held for each script call, so that searches side by side take
    /// turns at Redis page by page instead of adding up.
    pub turns: Option<&'a tokio::sync::Semaphore>,
}

impl Budget<'_> {
    /// For the command line: the operator asked for every dead letter.
    pub const WHOLE: Budget<'static> = Budget {
        page: PAGE,
        max_examined: 0,
        turns: None,
    };
}

/// What a search found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// What matched, newest first.
    pub letters: Vec<DeadLetter>,
    /// Set when the search stopped at its budget: the id of the last dead
    /// letter examined, to search on below.
    pub more_below: Option<String>,
    /// Dead letters read from Redis, matching or not.
    pub examined: usize,
}

/// The dead letters of `partitions` that match `filter`, newest first, at
/// most `limit` (`0`: all).
pub async fn list<C: ConnectionLike>(
    conn: &mut C,
    partitions: &[Partition],
    filter: &Filter,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    Ok(search(conn, partitions, filter, limit, None, Budget::WHOLE)
        .await?
        .letters)
}

/// The ids of every dead letter that matches `filter`: what an action on
/// "all that match" applies to.
pub async fn matching<C: ConnectionLike>(
    conn: &mut C,
    partitions: &[Partition],
    filter: &Filter,
) -> Result<Vec<String>> {
    let found = list(conn, partitions, filter, 0).await?;
    Ok(found.into_iter().map(|d| d.id).collect())
}

/// Where a search is in one partition's dead letters.
struct Cursor<'p> {
    partition: &'p Partition,
    /// The newest id still to read (`+`, an id, or `(id` exclusive).
    newest: String,
    page: VecDeque<Entry>,
    /// Nothing more to read below what is in `page`.
    done: bool,
}

/// The order of a search: time, then partition, newest first.
fn rank(partition: &Partition, entry_id: &str) -> ((u64, u64), String) {
    (entry_time(entry_id), partition.id().to_owned())
}

/// [`list`] within `budget`, starting below the dead letter `below` (an id
/// as [`DeadLetter::id`] gives it).
pub async fn search<C: ConnectionLike>(
    conn: &mut C,
    partitions: &[Partition],
    filter: &Filter,
    limit: usize,
    below: Option<&str>,
    budget: Budget<'_>,
) -> Result<Found> {
    let (newest, oldest) = filter.range(SystemTime::now());
    let below = below.map(|b| {
        let (id, partition) = split_dead_letter_ref(b);
        (id.to_owned(), partition.to_owned())
    });
    let mut cursors: Vec<Cursor<'_>> = partitions
        .iter()
        .map(|p| Cursor {
            partition: p,
            newest: match &below {
                // Ties at the same time: partitions ranked below the
                // cursor's still have that entry to give.
                Some((id, pid)) if p.id() < pid.as_str() => id.clone(),
                Some((id, _)) => format!("({id}"),
                None => newest.clone(),
            },
            page: VecDeque::new(),
            done: false,
        })
        .collect();
    let mut found = Found::default();
    let mut last: Option<String> = None;
    loop {
        let needing = cursors
            .iter()
            .filter(|c| c.page.is_empty() && !c.done)
            .count();
        let mut share = budget.page.max(1);
        if budget.max_examined > 0 && needing > 0 {
            let left = budget.max_examined.saturating_sub(found.examined);
            if left == 0 && last.is_some() {
                // Spent: search on below the last one examined.
                found.more_below = last;
                return Ok(found);
            }
            // The budget shared among the partitions to read, a dead letter
            // each at least, so every partition is looked at.
            share = share.min((left / needing).max(1));
        }
        for c in cursors.iter_mut().filter(|c| c.page.is_empty() && !c.done) {
            let page = share;
            let reply: Value = {
                let _turn = match budget.turns {
                    Some(t) => Some(t.acquire().await.context("the search was stopped")?),
                    None => None,
                };
                DEAD_PAGE
                    .key(c.partition.dead_letter())
                    .arg(&c.newest)
                    .arg(&oldest)
                    .arg(page)
                    .arg(SUMMARY_BYTES)
                    .invoke_async(conn)
                    .await
                    .context("reading the dead letters")?
            };
            let entries = parse_entries(&reply)?;
            found.examined += entries.len();
            c.done = entries.len() < page;
            if let Some(e) = entries.last() {
                c.newest = format!("({}", e.id);
            }
            c.page = entries.into();
        }
        let Some(next) = cursors
            .iter_mut()
            .filter(|c| !c.page.is_empty())
            .max_by(|a, b| {
                let head = |c: &Cursor<'_>| rank(c.partition, &c.page[0].id);
                head(a).cmp(&head(b))
            })
        else {
            break;
        };
        let entry = next.page.pop_front().expect("a page with an entry");
        let d = DeadLetter::from_entry_in(&entry, next.partition);
        last = Some(d.id.clone());
        if filter.matches(&d) {
            found.letters.push(d);
            if limit > 0 && found.letters.len() == limit {
                found.more_below = last;
                return Ok(found);
            }
        }
    }
    Ok(found)
}
