//! Redis Streams: the key layout, reading entries, consumer groups, and the
//! atomic steps the router and the queue workers take.
//!
//! # Key layout
//!
//! With the default prefix `switchyard`, ingress stream `chat:events` and
//! one partition on one node (see [`layout`] for partitions and clusters):
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `chat:events` | stream | ingress: the chat server XADDs here (group `switchyard`) |
//! | `switchyard:queue:<Queue>` | stream | one per queue (group `switchyard`) |
//! | `switchyard:dead` | stream | dead letters, with the reason and the original fields |
//! | `switchyard:errors:<Queue>` | hash | failures (JSON) of each message that failed and is pending a retry |
//! | `switchyard:kv:{<Queue>}:…` | strings, a sorted set | the queue's key-value state: one key per bucket and key, and an index of them |
//! | `switchyard:partitions` | hash | every partition used, and whether it is drained ([`registry`]) |
//! | `chat:events:partitions` | list | the partitions' ingress streams, for producers |
//!
//! Every consumer group is named after the prefix and created at the start of
//! its stream's history, so entries added before the host first ran are
//! handled too.

pub mod dead;
pub mod ingress;
pub mod inspect;
pub mod layout;
pub mod queue;
pub mod reclaim;
pub mod registry;
pub mod replicas;
pub mod retention;

pub use crate::redis::reply::{Entry, parse_entries, parse_read};
pub use layout::{Keys, Partition};
pub use replicas::Replicas;

use redis::Value;
use redis::aio::ConnectionLike;

use crate::redis::{StreamError, StreamResult};

pub use dead::dead_fields;

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

/// The current time as RFC 3339, for records operators read.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
