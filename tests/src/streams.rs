//! Redis for a test: a server of its own, connections, and the stream
//! reads and writes tests make (entries, fields, pending counts, the dead
//! letters).

use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;
use switchyard::admin::status::DeadLetter;
use switchyard::stream::Entry;

use crate::{RedisServer, TestConfig};

/// A redis-server for one test, stopped when dropped.
#[derive(Debug)]
pub struct Redis {
    pub server: RedisServer,
    pub client: redis::Client,
    url: String,
}

impl Redis {
    pub fn start() -> Self {
        let server = RedisServer::start().expect("starting redis-server");
        let url = server.url();
        let client = redis::Client::open(url.as_str()).expect("redis url");
        Redis {
            server,
            client,
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The host's view of this server, without `[redis]` settings.
    pub fn deployment(&self) -> switchyard::redis::Redis {
        let endpoint =
            switchyard::redis::Endpoint::parse(&self.url, &switchyard::redis::Access::default())
                .expect("a Redis URL");
        switchyard::redis::Redis::new(endpoint).expect("a Redis deployment")
    }

    /// A connection for the test itself.
    pub async fn conn(&self) -> MultiplexedConnection {
        connect(&self.client).await
    }
}

/// A connection for a test: with response timeouts far above anything a
/// busy machine makes a test wait (redis-rs waits 500 ms by default; a test
/// reading hundreds of MiB of dead letters needs more).
pub async fn connect(client: &redis::Client) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connecting to the test redis-server")
}

/// Sends `n` entries of `message_type` with an empty JSON body and ids
/// `<id_prefix>-<i>` to `stream`, one every `every`, on a task of its own.
pub fn send_steadily(
    mut conn: MultiplexedConnection,
    stream: &str,
    message_type: &'static str,
    id_prefix: &'static str,
    n: u64,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let stream = stream.to_owned();
    tokio::spawn(async move {
        for i in 0..n {
            let id = format!("{id_prefix}-{i}");
            xadd(
                &mut conn,
                &stream,
                &[("type", message_type), ("id", &id), ("body", "{}")],
            )
            .await;
            tokio::time::sleep(every).await;
        }
    })
}

/// XADDs one entry and returns its id.
pub async fn xadd(
    conn: &mut MultiplexedConnection,
    stream: &str,
    fields: &[(&str, &str)],
) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(conn).await.expect("XADD")
}

/// XADDs a message of type `t` with id `id` and `body` to `cfg`'s ingress.
pub async fn send_message(
    conn: &mut MultiplexedConnection,
    cfg: &TestConfig,
    t: &str,
    id: &str,
    body: &str,
) {
    xadd(
        conn,
        cfg.ingress(),
        &[("type", t), ("id", id), ("body", body)],
    )
    .await;
}

/// Every entry of a stream.
pub async fn entries(conn: &mut MultiplexedConnection, stream: &str) -> Vec<Entry> {
    let v: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE");
    switchyard::stream::parse_entries(&v).expect("an XRANGE reply")
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The value of a field of an entry.
pub fn field(entry: &Entry, name: &str) -> Option<String> {
    entry
        .fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// The dead-letter records of a test.
pub async fn dead_letters(conn: &mut MultiplexedConnection, cfg: &TestConfig) -> Vec<DeadLetter> {
    entries(conn, &cfg.dead_stream())
        .await
        .iter()
        .map(DeadLetter::from_entry)
        .collect()
}

/// Entries delivered to the group and not acknowledged (0 before the group
/// exists).
pub async fn pending(conn: &mut MultiplexedConnection, stream: &str, group: &str) -> u64 {
    let v: Value = match redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
    {
        Ok(v) => v,
        Err(e) if e.code() == Some("NOGROUP") => return 0,
        Err(e) => panic!("XPENDING {stream}: {e}"),
    };
    match v {
        Value::Array(parts) => match parts.first() {
            Some(Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// Pending entries per consumer.
pub async fn pending_by_consumer(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Vec<(String, u64)> {
    let v: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .expect("XPENDING");
    let Value::Array(parts) = v else {
        return Vec::new();
    };
    let Some(Value::Array(consumers)) = parts.get(3) else {
        return Vec::new();
    };
    consumers
        .iter()
        .filter_map(|c| {
            let Value::Array(kv) = c else { return None };
            let name = string(kv.first()?)?;
            let n = string(kv.get(1)?)?.parse().ok()?;
            Some((name, n))
        })
        .collect()
}

/// Entries of the stream never delivered to the group: those after the
/// group's last-delivered id. (XINFO GROUPS `lag` is not used: Redis 7.0
/// miscounts it after an AOF reload.)
pub async fn lag(conn: &mut MultiplexedConnection, stream: &str, group: &str) -> Option<u64> {
    let v: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
        .ok()?;
    let Value::Array(groups) = v else { return None };
    for g in groups {
        let Value::Array(flat) = g else { continue };
        let pairs: Vec<(String, Value)> = flat
            .chunks_exact(2)
            .filter_map(|kv| Some((string(&kv[0])?, kv[1].clone())))
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if get("name").as_ref().and_then(string).as_deref() != Some(group) {
            continue;
        }
        let last = get("last-delivered-id").as_ref().and_then(string)?;
        let after: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(format!("({last}"))
            .arg("+")
            .query_async(conn)
            .await
            .ok()?;
        return match after {
            Value::Array(entries) => Some(entries.len() as u64),
            _ => Some(0),
        };
    }
    None
}
