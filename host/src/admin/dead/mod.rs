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
use crate::stream::layout::split_dead_letter_ref;
use crate::stream::{Keys, Partition, dead_fields, now_rfc3339, parse_entries};

mod render;
mod search;

pub use render::{list_json, record_json, render_list, render_record};
pub use search::{Budget, Found, list, matching, search};

/// Dead letters read from Redis per script call while scanning.
const PAGE: usize = 500;

/// Bytes of each summarised value (a reason is at most 1 KiB; the error
/// history a few).
const SUMMARY_BYTES: usize = 8 * 1024;

/// Every partition whose dead letters a command looks at: those of the
/// configuration, and every other one recorded (see
/// [`crate::stream::registry`]).
pub async fn partitions<C: ConnectionLike>(
    conn: &mut C,
    config: &Config,
    keys: &Keys,
) -> Result<Vec<Partition>> {
    Ok(
        crate::stream::registry::known_with(conn, keys, config.ingress.partitions)
            .await?
            .into_iter()
            .map(|k| k.partition)
            .collect(),
    )
}

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

/// The partition a dead letter's id (as operators give it) names, and the
/// entry id in its dead-letter stream.
fn locate<'a>(keys: &Keys, id: &'a str) -> (Partition, &'a str) {
    let (entry, partition) = split_dead_letter_ref(id);
    (keys.by_id(partition), entry)
}

/// The dead letter `id`, if it is there.
pub async fn show<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    id: &str,
) -> Result<Option<Record>> {
    let (partition, entry) = locate(keys, id);
    let reply: Value = redis::cmd("XRANGE")
        .arg(partition.dead_letter())
        .arg(entry)
        .arg(entry)
        .query_async(conn)
        .await
        .with_context(|| format!("reading dead letter {id}"))?;
    Ok(parse_entries(&reply)?.into_iter().next().map(|e| Record {
        id: partition.dead_letter_ref(&e.id),
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

/// The streams a dead letter of `partition` may go back to: its ingress,
/// and its stream of each queue of the configuration.
fn replay_target(
    config: &Config,
    partition: &Partition,
    source: &str,
) -> Result<(), ForeignSource> {
    if source == partition.ingress
        || config
            .queues
            .keys()
            .any(|q| partition.queue_stream(q) == source)
    {
        Ok(())
    } else {
        Err(ForeignSource(source.to_owned()))
    }
}

/// Replays each of `ids`, to the stream of the partition it was
/// dead-lettered in.
pub async fn replay<C: ConnectionLike>(
    conn: &mut C,
    config: &Config,
    keys: &Keys,
    ids: &[String],
) -> Result<Vec<(String, Replayed)>> {
    let mut out = Vec::new();
    for id in ids {
        let (partition, entry) = locate(keys, id);
        let summary = summary(conn, &partition, entry).await?;
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
        if let Err(why) = replay_target(config, &partition, &source) {
            out.push((id.clone(), Replayed::Refused(why.to_string())));
            continue;
        }
        let reply: Vec<String> = DEAD_REPLAY
            .key(partition.dead_letter())
            .key(&source)
            .arg(entry)
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

/// The summarised record `id` of `partition`, if it is there.
async fn summary<C: ConnectionLike>(
    conn: &mut C,
    partition: &Partition,
    id: &str,
) -> Result<Option<crate::stream::Entry>> {
    let reply: Value = DEAD_PAGE
        .key(partition.dead_letter())
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
    let mut by_partition: std::collections::BTreeMap<Partition, Vec<&str>> = Default::default();
    for id in ids {
        let (partition, entry) = locate(keys, id);
        by_partition.entry(partition).or_default().push(entry);
    }
    let mut deleted = 0;
    for (partition, entries) in by_partition {
        for chunk in entries.chunks(PAGE) {
            let n: u64 = redis::cmd("XDEL")
                .arg(partition.dead_letter())
                .arg(chunk)
                .query_async(conn)
                .await
                .context("deleting dead letters")?;
            deleted += n;
        }
    }
    Ok(deleted)
}

/// A text that is not a dead-letter id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a dead-letter id (they look like 1795468579335-0, or 1795468579335-0@3-20931 in a partition other than 0)"
)]
pub struct NotAnId(pub String);

/// `id` if it is a dead-letter id: an entry id, perhaps followed by
/// `@<partition>`.
pub fn checked_id(id: &str) -> Result<(), NotAnId> {
    let (entry, partition) = split_dead_letter_ref(id);
    let partition_ok = partition == "0" || is_entry_id(partition);
    if is_entry_id(entry) && partition_ok {
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
        for good in ["1795468579335-0", "1-0@3-20931", "1-0@0"] {
            assert!(checked_id(good).is_ok(), "{good:?}");
        }
        for bad in ["1-0@", "1-0@x", "1-0@3-2@1", "x@3-1"] {
            assert!(checked_id(bad).is_err(), "{bad:?}");
        }
    }
}
