//! Dead letters for operators: list them by queue, reason and age, show
//! one whole, replay them to the stream they came from, delete them. The
//! `switchyard dead` commands run this code.
//!
//! A replay is one Redis script: the original fields go back on the stream
//! the message was read from (its queue's, or the ingress for what the
//! router refused) as a new entry, so its attempts start again, with the
//! producer's `id` as it was and `switchyard-replayed-at`, and the dead
//! letter is deleted in the same step. A dead letter already replayed or
//! deleted is reported as gone, so running a replay twice adds one copy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use redis::Value;
use redis::aio::ConnectionLike;

use super::status::DeadLetter;
use crate::config::Config;
use crate::redis::scripts::{DEAD_PAGE, DEAD_REPLAY};
use crate::stream::{Keys, dead_fields, now_rfc3339, parse_entries};
use crate::text::{Escaped, bounded};

/// Dead letters read from Redis per script call while scanning.
const PAGE: usize = 500;

/// Bytes of each summarised value (a reason is at most 1 KiB; the error
/// history a few).
const SUMMARY_BYTES: usize = 8 * 1024;

/// Which dead letters a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The queue that gave up; `(router)` for what the router refused.
    pub queue: Option<String>,
    /// Text the reason contains, ignoring case.
    pub reason: Option<String>,
    /// Dead-lettered at most this long ago.
    pub since: Option<Duration>,
    /// Dead-lettered at least this long ago.
    pub older_than: Option<Duration>,
    /// The message type, ignoring case.
    pub message_type: Option<String>,
}

impl Filter {
    fn matches(&self, d: &DeadLetter) -> bool {
        let queue = if d.queue.is_empty() {
            "(router)"
        } else {
            &d.queue
        };
        self.queue.as_deref().is_none_or(|q| q == queue)
            && self
                .reason
                .as_deref()
                .is_none_or(|r| d.reason.to_lowercase().contains(&r.to_lowercase()))
            && self
                .message_type
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(&d.message_type))
    }

    /// The id range the age bounds allow: dead-letter ids are the times
    /// they were written, in milliseconds.
    fn range(&self, now: SystemTime) -> (String, String) {
        let ms = |ago: Duration| {
            now.checked_sub(ago)
                .unwrap_or(UNIX_EPOCH)
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        };
        let newest = self
            .older_than
            .map_or_else(|| "+".to_owned(), |ago| format!("{}", ms(ago)));
        let oldest = self
            .since
            .map_or_else(|| "-".to_owned(), |ago| format!("{}", ms(ago)));
        (newest, oldest)
    }
}

/// How much of the dead-letter stream one search may read.
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
    /// For the command line: the operator asked for the whole stream.
    pub const WHOLE: Budget<'static> = Budget {
        page: PAGE,
        max_examined: 0,
        turns: None,
    };
}

/// What a search found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub letters: Vec<DeadLetter>,
    /// Set when the search stopped at its budget: the id of the last dead
    /// letter examined, to search on below.
    pub more_below: Option<String>,
    pub examined: usize,
}

/// The dead letters that match `filter`, newest first, at most `limit`
/// (`0`: all).
pub async fn list<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<DeadLetter>> {
    Ok(search(conn, keys, filter, limit, None, Budget::WHOLE)
        .await?
        .letters)
}

/// [`list`] within `budget`, starting below the dead letter `below`.
pub async fn search<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    filter: &Filter,
    limit: usize,
    below: Option<&str>,
    budget: Budget<'_>,
) -> Result<Found> {
    let (mut newest, oldest) = filter.range(SystemTime::now());
    if let Some(below) = below {
        newest = format!("({below}");
    }
    let mut found = Found::default();
    loop {
        let mut page = budget.page.max(1);
        if budget.max_examined > 0 {
            page = page.min(budget.max_examined - found.examined);
        }
        let reply: Value = {
            let _turn = match budget.turns {
                Some(t) => Some(t.acquire().await.context("the search was stopped")?),
                None => None,
            };
            DEAD_PAGE
                .key(keys.dead_letter())
                .arg(&newest)
                .arg(&oldest)
                .arg(page)
                .arg(SUMMARY_BYTES)
                .invoke_async(conn)
                .await
                .context("reading the dead letters")?
        };
        let entries = parse_entries(&reply)?;
        let Some(last) = entries.last() else { break };
        newest = format!("({}", last.id);
        found.examined += entries.len();
        let full = entries.len() == page;
        for entry in &entries {
            let d = DeadLetter::from_entry(entry);
            if filter.matches(&d) {
                found.letters.push(d);
                if limit > 0 && found.letters.len() == limit {
                    let last_kept = found.letters.last().map(|d| d.id.clone());
                    found.more_below = last_kept;
                    return Ok(found);
                }
            }
        }
        if !full {
            break;
        }
        if budget.max_examined > 0 && found.examined >= budget.max_examined {
            found.more_below = Some(last.id.clone());
            break;
        }
    }
    Ok(found)
}

/// One dead letter whole: every field, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub fields: Vec<(String, String)>,
}

impl Record {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The fields the producer sent (the host's renaming undone).
    pub fn original(&self) -> Vec<(String, String)> {
        self.fields
            .iter()
            .filter(|(k, _)| !k.starts_with("dead-"))
            .map(|(k, v)| (k.strip_prefix("orig-").unwrap_or(k).to_owned(), v.clone()))
            .collect()
    }

    /// The failed attempts, oldest first.
    pub fn errors(&self) -> Vec<String> {
        self.get(dead_fields::ERRORS)
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_default()
    }
}

/// The dead letter `id`, if it is there.
pub async fn show<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    id: &str,
) -> Result<Option<Record>> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(keys.dead_letter())
        .arg(id)
        .arg(id)
        .query_async(conn)
        .await
        .with_context(|| format!("reading dead letter {id}"))?;
    Ok(parse_entries(&reply)?.into_iter().next().map(|e| Record {
        id: e.id,
        fields: e
            .fields
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect(),
    }))
}

/// What came of replaying one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Added to `stream` as entry `entry`, and deleted from the dead
    /// letters.
    Done { stream: String, entry: String },
    /// Not a dead letter (any more): replayed or deleted already.
    Gone,
    /// Left where it is, for this reason.
    Refused(String),
}

/// A dead letter whose source is not a stream of this configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("it came from {0}, which is neither the ingress stream nor a queue of this configuration")]
pub struct ForeignSource(pub String);

/// The streams a dead letter may go back to: the ingress, and the stream
/// of each queue of the configuration.
fn replay_target(config: &Config, source: &str) -> Result<(), ForeignSource> {
    let keys = Keys::new(&config.host.prefix);
    if source == config.ingress.stream
        || config.queues.keys().any(|q| keys.queue_stream(q) == source)
    {
        Ok(())
    } else {
        Err(ForeignSource(source.to_owned()))
    }
}

/// Replays each of `ids`.
pub async fn replay<C: ConnectionLike>(
    conn: &mut C,
    config: &Config,
    ids: &[String],
) -> Result<Vec<(String, Replayed)>> {
    let keys = Keys::new(&config.host.prefix);
    let mut out = Vec::new();
    for id in ids {
        let summary = summary(conn, &keys, id).await?;
        let Some(summary) = summary else {
            out.push((id.clone(), Replayed::Gone));
            continue;
        };
        let source = summary
            .fields
            .iter()
            .find(|(k, _)| k == dead_fields::SOURCE.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        if let Err(why) = replay_target(config, &source) {
            out.push((id.clone(), Replayed::Refused(why.to_string())));
            continue;
        }
        let reply: Vec<String> = DEAD_REPLAY
            .key(keys.dead_letter())
            .key(&source)
            .arg(id)
            .arg(now_rfc3339())
            .invoke_async(conn)
            .await
            .with_context(|| format!("replaying {id}"))?;
        let result = match reply.as_slice() {
            [done, entry] if done == "replayed" => Replayed::Done {
                stream: source,
                entry: entry.clone(),
            },
            [gone] if gone == "gone" => Replayed::Gone,
            [refused, why] if refused == "refused" => Replayed::Refused(why.clone()),
            other => bail!("unexpected answer to a replay: {other:?}"),
        };
        out.push((id.clone(), result));
    }
    Ok(out)
}

/// The summarised record `id`, if it is there.
async fn summary<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    id: &str,
) -> Result<Option<crate::stream::Entry>> {
    let reply: Value = DEAD_PAGE
        .key(keys.dead_letter())
        .arg(id)
        .arg(id)
        .arg(1)
        .arg(SUMMARY_BYTES)
        .invoke_async(conn)
        .await
        .with_context(|| format!("reading dead letter {id}"))?;
    Ok(parse_entries(&reply)?.into_iter().next())
}

/// Deletes each of `ids`; returns how many were there.
pub async fn purge<C: ConnectionLike>(conn: &mut C, keys: &Keys, ids: &[String]) -> Result<u64> {
    let mut deleted = 0;
    for chunk in ids.chunks(PAGE) {
        let n: u64 = redis::cmd("XDEL")
            .arg(keys.dead_letter())
            .arg(chunk)
            .query_async(conn)
            .await
            .context("deleting dead letters")?;
        deleted += n;
    }
    Ok(deleted)
}

/// A text that is not a dead-letter id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a dead-letter id (they look like 1795468579335-0)")]
pub struct NotAnId(pub String);

/// `id` if it is a dead-letter id.
pub fn checked_id(id: &str) -> Result<(), NotAnId> {
    if is_entry_id(id) {
        Ok(())
    } else {
        Err(NotAnId(id.to_owned()))
    }
}

/// `ids` if every one is a dead-letter id.
pub fn checked_ids(ids: Vec<String>) -> Result<Vec<String>, NotAnId> {
    for id in &ids {
        checked_id(id)?;
    }
    Ok(ids)
}

/// The ids of every dead letter that matches `filter`: what an action on
/// "all that match" applies to.
pub async fn matching<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    filter: &Filter,
) -> Result<Vec<String>> {
    let found = list(conn, keys, filter, 0).await?;
    Ok(found.into_iter().map(|d| d.id).collect())
}

/// Whether `text` is a stream entry id (`<ms>-<seq>`): ids come from
/// operators, and a malformed one is an error, not an empty answer.
pub fn is_entry_id(text: &str) -> bool {
    match text.split_once('-') {
        Some((ms, seq)) => {
            !ms.is_empty()
                && !seq.is_empty()
                && ms.bytes().all(|b| b.is_ascii_digit())
                && seq.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Bytes of a reason `dead list` prints.
const LISTED_REASON: usize = 120;

/// `dead list` as a table, producer and plugin texts cut and escaped.
pub fn render_list(letters: &[DeadLetter]) -> String {
    use std::fmt::Write;
    let cut = |t: &str, n: usize| Escaped(&bounded(t, n)).to_string();
    let mut out = format!(
        "{:<17} {:<26} {:<12} {:<26} {:<20} {:>8}  REASON\n",
        "ID", "DEAD-LETTERED", "QUEUE", "TYPE", "MESSAGE ID", "ATTEMPTS"
    );
    for d in letters {
        let queue = if d.queue.is_empty() {
            "(router)"
        } else {
            &d.queue
        };
        let _ = writeln!(
            out,
            "{:<17} {:<26} {:<12} {:<26} {:<20} {:>8}  {}",
            d.id,
            cut(&d.at, 32),
            cut(queue, 40),
            cut(&d.message_type, 60),
            cut(&d.message_id, 60),
            cut(&d.attempts, 10),
            cut(&d.reason, LISTED_REASON)
        );
    }
    out
}

/// `dead list --json`: one object per dead letter.
pub fn list_json(letters: &[DeadLetter]) -> serde_json::Value {
    letters
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "at": d.at,
                "queue": if d.queue.is_empty() { "(router)" } else { &d.queue },
                "type": d.message_type,
                "message_id": d.message_id,
                "attempts": d.attempts.parse::<u64>().ok(),
                "reason": d.reason,
            })
        })
        .collect()
}

/// `dead show`: the record's own fields, the failed attempts, then the
/// message's fields with a JSON body pretty-printed; every text escaped
/// (a line break is written `\n`), so none can forge a line.
pub fn render_record(record: &Record) -> String {
    use std::fmt::Write;
    let mut out = format!("Dead letter {}\n", record.id);
    for (k, v) in record.fields.iter().filter(|(k, _)| k.starts_with("dead-")) {
        if k == dead_fields::ERRORS {
            continue;
        }
        let _ = writeln!(out, "  {}: {}", Escaped(k), Escaped(v));
    }
    let errors = record.errors();
    if !errors.is_empty() {
        out.push_str("Failed attempts, oldest first:\n");
        for (n, e) in errors.iter().enumerate() {
            let _ = writeln!(out, "  {}. {}", n + 1, Escaped(e));
        }
    }
    out.push_str("Message:\n");
    for (k, v) in record.original() {
        if k == "body"
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&v)
        {
            let pretty = serde_json::to_string_pretty(&json).unwrap_or(v);
            out.push_str("  body:\n");
            for line in pretty.lines() {
                let _ = writeln!(out, "    {}", Escaped(line));
            }
        } else {
            let _ = writeln!(out, "  {}: {}", Escaped(&k), Escaped(&v));
        }
    }
    out
}

/// `dead show --json`.
pub fn record_json(record: &Record) -> serde_json::Value {
    let object = |fields: Vec<(String, String)>| {
        serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        )
    };
    serde_json::json!({
        "id": record.id,
        "record": object(record.fields.iter().filter(|(k, _)| k.starts_with("dead-")).cloned().collect()),
        "errors": record.errors(),
        "message": object(record.original()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(queue: &str, t: &str, reason: &str) -> DeadLetter {
        DeadLetter {
            id: "1-0".into(),
            queue: queue.into(),
            message_type: t.into(),
            message_id: "m".into(),
            attempts: "1".into(),
            reason: reason.into(),
            at: String::new(),
        }
    }

    #[test]
    fn filters_match_queue_reason_and_type() {
        let d = letter("Email", "chat.ended", "The relay refused it: 550 mailbox");
        let router = letter("", "x", "no route for message type");
        let f = |queue: Option<&str>, reason: Option<&str>| Filter {
            queue: queue.map(str::to_owned),
            reason: reason.map(str::to_owned),
            ..Default::default()
        };
        assert!(f(None, None).matches(&d));
        assert!(f(Some("Email"), Some("MAILBOX")).matches(&d));
        assert!(!f(Some("Ticket"), None).matches(&d));
        assert!(!f(None, Some("timeout")).matches(&d));
        assert!(f(Some("(router)"), None).matches(&router));
        assert!(!f(Some("(router)"), None).matches(&d));
        let typed = Filter {
            message_type: Some("Chat.Ended".into()),
            ..Default::default()
        };
        assert!(typed.matches(&d) && !typed.matches(&router));
    }

    #[test]
    fn ages_become_an_id_range() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let f = Filter {
            since: Some(Duration::from_secs(100)),
            older_than: Some(Duration::from_secs(10)),
            ..Default::default()
        };
        assert_eq!(f.range(now), ("990000".into(), "900000".into()));
        assert_eq!(Filter::default().range(now), ("+".into(), "-".into()));
    }

    #[test]
    fn entry_ids_are_checked() {
        assert!(is_entry_id("1795468579335-0"));
        for bad in ["", "1795468579335", "-0", "1-", "a-0", "1-0 ", "+"] {
            assert!(!is_entry_id(bad), "{bad:?}");
        }
    }
}
