//! What a stream and its consumer group hold now, read from Redis: for
//! `status`, the dashboard, and deciding when a partition is drained.

use redis::Value;
use redis::aio::ConnectionLike;

use crate::redis::reply::{info_field, info_pairs, string};
use crate::redis::scripts::LAST_ID;
use crate::redis::{Doing, StreamResult};

/// One stream and its consumer group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStatus {
    pub key: String,
    /// Entries in the stream (handled ones included until trimmed).
    pub length: u64,
    /// Entries never delivered to the group; `None` when Redis cannot tell.
    pub lag: Option<u64>,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Consumers known to the group.
    pub consumers: u64,
    /// Whether the group exists.
    pub group: bool,
}

impl StreamStatus {
    /// Nothing waits to be read and nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.pending == 0 && self.lag == Some(0)
    }
}

/// Reads what `key` holds for `group`.
pub async fn stream_status<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    group: &str,
) -> StreamResult<StreamStatus> {
    let length: u64 = redis::cmd("XLEN")
        .arg(key)
        .query_async(conn)
        .await
        .doing(|| format!("XLEN {key}"))?;
    let mut status = StreamStatus {
        key: key.to_owned(),
        length,
        lag: Some(0),
        ..Default::default()
    };
    let groups: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await;
    let groups = match groups {
        Ok(v) => v,
        // No such stream yet: nothing waiting.
        Err(e) if e.code() == Some("ERR") && e.to_string().contains("no such key") => {
            return Ok(status);
        }
        Err(e) => return Err(e).doing(|| format!("XINFO GROUPS {key}")),
    };
    let Value::Array(groups) = groups else {
        return Ok(status);
    };
    for g in groups {
        let pairs = info_pairs(&g);
        let field = |name: &str| info_field(&pairs, name);
        if field("name").and_then(string).as_deref() != Some(group) {
            continue;
        }
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => Some(*i as u64),
            _ => None,
        };
        status.group = true;
        status.pending = int(field("pending")).unwrap_or(0);
        status.consumers = int(field("consumers")).unwrap_or(0);
        status.lag = int(field("lag"));
        // Redis 7.0 can miscount `lag` after an AOF reload; what is certain is
        // that nothing waits once the group has read up to the last entry.
        if let Some(last) = field("last-delivered-id").and_then(string) {
            let newest: Option<String> = LAST_ID
                .key(key)
                .invoke_async(conn)
                .await
                .doing(|| format!("the last entry of {key}"))?;
            if newest.is_none_or(|id| id == last) {
                status.lag = Some(0);
            }
        }
    }
    Ok(status)
}
