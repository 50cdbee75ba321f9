//! Keeping streams bounded: handled entries of the ingress and queue streams
//! are trimmed after a while, dead letters after their retention, and the
//! consumers of processes that are gone are removed once nothing is pending
//! for them.
//!
//! An entry is trimmed only if every group on its stream has read it and
//! none has it pending: the trim point is the lowest of each group's oldest
//! pending entry and first unread entry, and both only move forward.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;
use redis::aio::ConnectionLike;

use crate::config::RetentionSettings;
use crate::redis::reply::{info_field as get, info_pairs as pairs, string};
use crate::redis::{Doing, StreamError, StreamResult};

/// A stream entry id as numbers, for comparing.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The first entry id no group still needs: every entry below it has been
/// read by every group and is pending for none. `None` if the stream has no
/// group.
pub async fn safe_trim_point<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
) -> StreamResult<Option<(u64, u64)>> {
    let groups: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
    {
        Ok(v) => v,
        Err(e) if e.code() == Some("ERR") => return Ok(None),
        Err(e) => return Err(StreamError::redis(format!("XINFO GROUPS {stream}"), &e)),
    };
    let Value::Array(groups) = groups else {
        return Ok(None);
    };
    let mut point: Option<(u64, u64)> = None;
    for g in &groups {
        let g = pairs(g);
        let Some(name) = get(&g, "name").and_then(string) else {
            continue;
        };
        let last = get(&g, "last-delivered-id")
            .and_then(string)
            .and_then(|id| parse_id(&id))
            .ok_or_else(|| {
                StreamError::protocol(
                    format!("XINFO GROUPS {stream}"),
                    "a group without a last-delivered id",
                )
            })?;
        // The first entry this group has not read.
        let mut bound = (last.0, last.1.saturating_add(1));
        let oldest: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&name)
            .arg("-")
            .arg("+")
            .arg(1)
            .query_async(conn)
            .await
            .doing(|| format!("XPENDING {stream}"))?;
        if let Value::Array(rows) = oldest
            && let Some(Value::Array(row)) = rows.first()
            && let Some(id) = row.first().and_then(string).and_then(|id| parse_id(&id))
        {
            bound = bound.min(id);
        }
        point = Some(point.map_or(bound, |p| p.min(bound)));
    }
    Ok(point)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Trims handled entries older than `keep` from `stream`. Returns how many
/// were removed.
pub async fn trim_handled<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    keep: Duration,
) -> StreamResult<u64> {
    let Some(safe) = safe_trim_point(conn, stream).await? else {
        return Ok(0);
    };
    let by_age = (now_ms().saturating_sub(keep.as_millis() as u64), 0);
    let (ms, seq) = safe.min(by_age);
    let removed: u64 = redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(format!("{ms}-{seq}"))
        .query_async(conn)
        .await
        .doing(|| format!("trimming {stream}"))?;
    Ok(removed)
}

/// Trims dead letters past their age, then past the count limit.
pub async fn trim_dead_letters<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    r: &RetentionSettings,
) -> StreamResult<u64> {
    let cutoff = now_ms().saturating_sub(r.dead_letter_age.as_millis() as u64);
    let mut removed: u64 = redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(format!("{cutoff}-0"))
        .query_async(conn)
        .await
        .doing(|| format!("trimming {stream}"))?;
    if r.dead_letter_max_len > 0 {
        let n: u64 = redis::cmd("XTRIM")
            .arg(stream)
            .arg("MAXLEN")
            .arg(r.dead_letter_max_len)
            .query_async(conn)
            .await
            .doing(|| format!("trimming {stream}"))?;
        removed += n;
    }
    Ok(removed)
}

/// Removes the consumers of `group` on `stream` that have been idle longer
/// than `idle` with nothing pending, except `keep` (this process's own).
/// Returns their names.
pub async fn remove_idle_consumers<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    group: &str,
    idle: Duration,
    keep: &str,
) -> StreamResult<Vec<String>> {
    let consumers: Value = match redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
    {
        Ok(v) => v,
        Err(e) if e.code() == Some("NOGROUP") || e.code() == Some("ERR") => return Ok(Vec::new()),
        Err(e) => return Err(StreamError::redis(format!("XINFO CONSUMERS {stream}"), &e)),
    };
    let Value::Array(consumers) = consumers else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for c in &consumers {
        let c = pairs(c);
        let Some(name) = get(&c, "name").and_then(string) else {
            continue;
        };
        let int = |k: &str| match get(&c, k) {
            Some(Value::Int(i)) => *i as u64,
            _ => 0,
        };
        if name == keep || int("pending") > 0 || int("idle") < idle.as_millis() as u64 {
            continue;
        }
        let deleted: i64 = crate::redis::scripts::DELETE_CONSUMER
            .key(stream)
            .arg(group)
            .arg(&name)
            .invoke_async(conn)
            .await
            .doing(|| format!("removing consumer {name} of {stream}"))?;
        if deleted >= 0 {
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_compare_as_numbers() {
        assert_eq!(parse_id("1700000000000-12"), Some((1_700_000_000_000, 12)));
        assert!(parse_id("99-0") < parse_id("100-0"));
        assert_eq!(parse_id("nope"), None);
    }
}
