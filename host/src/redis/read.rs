//! Entries as the host reads them, within size bounds, and the claiming of
//! entries other consumers left pending.
//!
//! Producers decide how large an entry is. Neither the router nor a queue's
//! workers hold more than their batch of entries of at most `max_entry_kib`
//! each: new entries are read by [`super::bounded`], and entries left
//! pending are taken over through a script ([`claim`]) that likewise returns
//! an entry over the bounds as its size only. Such an entry is dead-lettered
//! by a script that copies it inside Redis. The claim script is the one
//! place XAUTOCLAIM replies are parsed.

use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionLike;

use super::reply::{Entry, bytes, string};
use crate::message::Fields;
use crate::redis::{Doing, StreamError, StreamResult};

/// How large an entry handed to the host may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_bytes: usize,
    pub max_fields: usize,
}

/// Bytes one script call loads or copies at most (plus one entry): Redis
/// runs a script alone, so a call over a backlog of large entries would
/// hold up every other client, the producers among them. At about 20 ms per
/// 8 MiB copied, this keeps a call under a few tens of milliseconds.
pub const SCRIPT_BUDGET: usize = 16 * 1024 * 1024;

/// One entry read, whole or, over the bounds, as its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEntry {
    Whole {
        entry: Entry,
        /// Times the entry has been delivered, this delivery included.
        deliveries: u32,
    },
    TooLarge {
        id: String,
        deliveries: u32,
        bytes: u64,
        fields: u64,
    },
}

impl ReadEntry {
    pub fn id(&self) -> &str {
        match self {
            ReadEntry::Whole { entry, .. } => &entry.id,
            ReadEntry::TooLarge { id, .. } => id,
        }
    }

    pub fn deliveries(&self) -> u32 {
        match self {
            ReadEntry::Whole { deliveries, .. } | ReadEntry::TooLarge { deliveries, .. } => {
                *deliveries
            }
        }
    }
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Where the next claim scan starts; `0-0` when this one reached the end
    /// of the pending list (always, for new entries).
    pub cursor: String,
    pub entries: Vec<ReadEntry>,
    /// Pending ids whose entries no longer exist (deleted from the stream);
    /// Redis drops them from the pending list.
    pub deleted: Vec<String>,
}

/// Takes over up to `count` entries of `stream` pending in `group` for
/// longer than `min_idle`, for `consumer`, scanning the pending list from
/// `cursor`; never returns one over `bounds` whole (see `lua/read.lua`).
#[allow(clippy::too_many_arguments, reason = "one Redis command's arguments")]
pub async fn claim<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    cursor: &str,
    count: usize,
    bounds: Bounds,
) -> StreamResult<ReadBatch> {
    let mut inv = super::scripts::READ.key(stream);
    inv.arg(group)
        .arg(consumer)
        .arg(count)
        .arg(bounds.max_bytes)
        .arg(bounds.max_fields)
        .arg(SCRIPT_BUDGET)
        .arg(min_idle.as_millis() as u64)
        .arg(cursor);
    let reply: Value = inv
        .invoke_async(conn)
        .await
        .doing(|| format!("reading {stream:?}"))?;
    parse_batch(&reply)
        .map_err(|detail| StreamError::protocol(format!("reading {stream:?}"), detail.0))
}

/// A reply of the read script that is not what it returns.
#[derive(Debug)]
struct Unexpected(String);

fn parse_batch(v: &Value) -> Result<ReadBatch, Unexpected> {
    let unexpected = || Unexpected(format!("unexpected read reply: {v:?}"));
    let Value::Array(parts) = v else {
        return Err(unexpected());
    };
    let [cursor, deleted, entries] = parts.as_slice() else {
        return Err(unexpected());
    };
    let cursor = string(cursor).unwrap_or_else(|| "0-0".into());
    let deleted = match deleted {
        Value::Array(ids) => ids.iter().filter_map(string).collect(),
        _ => Vec::new(),
    };
    let Value::Array(entries) = entries else {
        return Err(unexpected());
    };
    let int = |v: &Value| match v {
        Value::Int(n) => Some(*n),
        _ => None,
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Value::Array(items) = e else {
            return Err(Unexpected(format!("unexpected read entry: {e:?}")));
        };
        let id = items
            .first()
            .and_then(string)
            .ok_or_else(|| Unexpected(format!("read entry without an id: {e:?}")))?;
        let deliveries = items
            .get(1)
            .and_then(int)
            .unwrap_or(1)
            .clamp(1, i64::from(u32::MAX)) as u32;
        match items.get(2) {
            Some(Value::Array(flat)) => out.push(ReadEntry::Whole {
                entry: Entry {
                    id,
                    fields: pairs(flat),
                },
                deliveries,
            }),
            Some(Value::Int(bytes)) => out.push(ReadEntry::TooLarge {
                id,
                deliveries,
                bytes: (*bytes).max(0) as u64,
                fields: items.get(3).and_then(int).unwrap_or(0).max(0) as u64,
            }),
            other => return Err(Unexpected(format!("unexpected read entry: {other:?}"))),
        }
    }
    Ok(ReadBatch {
        cursor,
        entries: out,
        deleted,
    })
}

fn pairs(flat: &[Value]) -> Fields {
    flat.chunks_exact(2)
        .filter_map(|kv| Some((bytes(&kv[0])?, bytes(&kv[1])?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_whole_and_oversized_entries() {
        let reply = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![bulk("3-0")]),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("4-0"),
                    Value::Int(2),
                    Value::Array(vec![bulk("type"), bulk("a")]),
                ]),
                Value::Array(vec![
                    bulk("4-1"),
                    Value::Int(1),
                    Value::Int(10_485_760),
                    Value::Int(3),
                ]),
            ]),
        ]);
        let b = parse_batch(&reply).unwrap();
        assert_eq!(b.cursor, "5-0");
        assert_eq!(b.deleted, ["3-0"]);
        assert_eq!(
            b.entries,
            [
                ReadEntry::Whole {
                    entry: Entry {
                        id: "4-0".into(),
                        fields: vec![(b"type".to_vec(), b"a".to_vec())]
                    },
                    deliveries: 2
                },
                ReadEntry::TooLarge {
                    id: "4-1".into(),
                    deliveries: 1,
                    bytes: 10_485_760,
                    fields: 3
                }
            ]
        );
    }
}
