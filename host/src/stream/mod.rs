//! Redis Streams: the key layout, reading entries, consumer groups, and the
//! atomic steps the router and the queue workers take.
//!
//! # Key layout
//!
//! With the default prefix `switchyard` and ingress stream `chat:events`:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `chat:events` | stream | ingress: the chat server XADDs here (group `switchyard`) |
//! | `switchyard:queue:<Queue>` | stream | one per queue (group `switchyard`) |
//! | `switchyard:dead` | stream | dead letters, with the reason and the original fields |
//! | `switchyard:errors:<Queue>` | hash | failures (JSON) of each message that failed and is pending a retry |
//!
//! Every consumer group is named after the prefix and created at the start of
//! its stream's history, so entries added before the host first ran are
//! handled too.

pub mod bounded;
pub mod ingress;
pub mod queue;
pub mod read;
pub mod retention;
pub mod scripts;

use anyhow::{Context, Result, bail};
use redis::Value;
use redis::aio::ConnectionLike;

use crate::message::Fields;
use crate::redis_conn::{StreamError, StreamResult};

/// The names of every Redis key the host uses.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The consumer group on the ingress stream and on every queue stream.
    pub fn group(&self) -> &str {
        &self.prefix
    }

    pub fn queue_stream(&self, queue: &str) -> String {
        format!("{}:queue:{queue}", self.prefix)
    }

    pub fn dead_letter(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    pub fn errors(&self, queue: &str) -> String {
        format!("{}:errors:{queue}", self.prefix)
    }
}

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: Fields,
}

/// Dead-letter record fields, written before the original fields. Every
/// name the host writes starts with `dead-`; an original field named so is
/// kept as `orig-` + its name (see [`read::original_fields`]).
pub mod dead_fields {
    /// Why the message was dead-lettered.
    pub const REASON: &str = "dead-reason";
    /// The queue that gave up, or empty when the router did.
    pub const QUEUE: &str = "dead-queue";
    /// The stream the entry was read from.
    pub const SOURCE: &str = "dead-source";
    /// The entry's id in that stream.
    pub const SOURCE_ID: &str = "dead-source-id";
    /// Attempts made (0 when it was never handed to a plugin).
    pub const ATTEMPTS: &str = "dead-attempts";
    /// When, RFC 3339 UTC.
    pub const AT: &str = "dead-at";
    /// Content hash of the plugin that made the last attempt.
    pub const PLUGIN: &str = "dead-plugin";
    /// The last few failed attempts, a JSON array of strings, oldest first.
    pub const ERRORS: &str = "dead-errors";
    /// When the first attempt failed.
    pub const FIRST_FAILURE: &str = "dead-first-failure";
    /// When the last attempt failed.
    pub const LAST_FAILURE: &str = "dead-last-failure";
    /// An entry with more fields than one script command can carry, whole:
    /// a JSON array of names and values.
    pub const FIELDS: &str = "dead-fields";
    /// Set when the entry was deleted from its stream before it could be
    /// copied.
    pub const ORIGINAL: &str = "dead-original";
}

/// Creates `group` on `stream` at the start of its history, creating the
/// stream if needed. An existing group is left as it is.
pub async fn ensure_group<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
) -> StreamResult<()> {
    let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(StreamError::redis(
            format!("creating group {group:?} on stream {stream:?}"),
            &e,
        )),
    }
}

pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(crate) fn string(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads an XINFO reply entry (a flat array of name, value, ... in RESP2,
/// a map in RESP3) into name/value pairs.
pub(crate) fn info_pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Array(flat) => flat
            .chunks_exact(2)
            .filter_map(|kv| Some((string(&kv[0])?, kv[1].clone())))
            .collect(),
        Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((string(k)?, v.clone())))
            .collect(),
        _ => Vec::new(),
    }
}

/// The value of one XINFO field.
pub(crate) fn info_field<'a>(pairs: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Parses an array of `[id, [field, value, ...]]`. Entries whose data was
/// deleted (nil fields) are skipped.
pub fn parse_entries(v: &Value) -> Result<Vec<Entry>> {
    let Value::Array(items) = v else {
        if matches!(v, Value::Nil) {
            return Ok(Vec::new());
        }
        bail!("unexpected stream reply: {v:?}");
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            bail!("unexpected stream entry: {item:?}")
        };
        let [id, data] = parts.as_slice() else {
            bail!("unexpected stream entry: {item:?}")
        };
        let id = string(id).context("stream entry without an id")?;
        let Value::Array(flat) = data else {
            continue;
        };
        let fields = flat
            .chunks_exact(2)
            .filter_map(|kv| Some((bytes(&kv[0])?, bytes(&kv[1])?)))
            .collect();
        entries.push(Entry { id, fields });
    }
    Ok(entries)
}

/// Parses an XREADGROUP reply for one stream.
pub fn parse_read(v: &Value) -> Result<Vec<Entry>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some(Value::Array(kv)) if kv.len() == 2 => parse_entries(&kv[1]),
            Some(other) => bail!("unexpected XREADGROUP reply: {other:?}"),
        },
        Value::Map(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some((_, entries)) => parse_entries(entries),
        },
        other => bail!("unexpected XREADGROUP reply: {other:?}"),
    }
}

/// The current time as RFC 3339, for records operators read.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
