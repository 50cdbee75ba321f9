//! Key-value state for plugins: `wasi:keyvalue` (draft 2, `store` and
//! `atomics`) backed by the host's Redis.
//!
//! A queue's plugin reaches only its own buckets: every key lives under
//! `<prefix>:kv:{<queue>}:` (the braces keep a queue's keys in one Redis
//! Cluster slot), and a queue without a `[queues.X.keyvalue]` grant cannot
//! open a bucket at all. What a queue holds is bounded by its quota (keys
//! and bytes of values, over all its buckets), checked inside the script
//! that writes, so concurrent writers cannot overshoot it. Keys may expire
//! after the grant's `ttl`; expired keys stop counting against the quota.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::redis::Conn;

use crate::config::KeyValueGrant;
use crate::redis::scripts::{KV_DELETE, KV_LIST, KV_WRITE};

use super::memory::MemoryKv;
pub use super::outcome::{KvError, Swapped};

/// Bytes a bucket name may have.
const MAX_BUCKET: usize = 128;
/// Bytes a key may have.
const MAX_KEY: usize = 512;
/// Keys one `list-keys` call returns.
const PAGE: usize = 100;

/// An open bucket, as a plugin holds it (a resource).
#[derive(Debug, Clone)]
pub struct Bucket {
    pub name: String,
}

/// A compare-and-swap handle: a key and the value it held when the handle
/// was made.
#[derive(Debug, Clone)]
pub struct Cas {
    pub bucket: String,
    pub key: String,
    pub current: Option<Vec<u8>>,
}

/// One queue's key-value buckets.
#[derive(Clone)]
pub struct KeyValueStore {
    /// None in memory.
    conn: Option<Conn>,
    /// `<prefix>:kv:{<queue>}:`
    base: String,
    grant: KeyValueGrant,
    /// In this process's memory instead of Redis (`switchyard invoke`).
    memory: Option<Arc<Mutex<MemoryKv>>>,
}

impl std::fmt::Debug for KeyValueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValueStore")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn store_error(e: redis::RedisError) -> KvError {
    if e.code() == Some("QUOTA") {
        return KvError::Quota(e.detail().unwrap_or("over the quota").trim().to_owned());
    }
    if e.code() == Some("ERR")
        && e.detail()
            .is_some_and(|d| d.contains("not an integer") || d.contains("overflow"))
    {
        return KvError::Invalid(format!(
            "the value is not a 64-bit integer ({})",
            e.detail().unwrap_or("")
        ));
    }
    KvError::Store(e.to_string())
}

/// Checks a bucket name or key: bounded, without the NUL that separates
/// them in the host's index.
fn check_name(what: &str, name: &str, max: usize) -> Result<(), KvError> {
    if name.len() > max {
        return Err(KvError::Invalid(format!("a {what} is at most {max} bytes")));
    }
    if name.contains('\0') {
        return Err(KvError::Invalid(format!("a {what} may not contain NUL")));
    }
    Ok(())
}

impl KeyValueStore {
    /// A store whose keys start with `base` (see `Keys::keyvalue`).
    pub fn new(conn: Conn, base: String, grant: KeyValueGrant) -> Self {
        KeyValueStore {
            conn: Some(conn),
            base,
            grant,
            memory: None,
        }
    }

    /// A store in memory, `kv`, under `grant`'s quota: for running a
    /// plugin without Redis.
    pub fn in_memory(kv: Arc<Mutex<MemoryKv>>, grant: KeyValueGrant) -> Self {
        KeyValueStore {
            conn: None,
            base: String::new(),
            grant,
            memory: Some(kv),
        }
    }

    /// The connection of a store in Redis.
    fn conn(&self) -> Result<Conn, KvError> {
        self.conn
            .clone()
            .ok_or_else(|| KvError::Store("the store has no connection".into()))
    }

    fn memory(&self) -> Option<std::sync::MutexGuard<'_, MemoryKv>> {
        self.memory
            .as_ref()
            .map(|m| m.lock().expect("key-value memory lock"))
    }

    /// Opens a bucket: any name within bounds (the queue's buckets are its
    /// own, whatever their names).
    pub fn open(&self, name: &str) -> Result<Bucket, KvError> {
        if name.is_empty() {
            return Err(KvError::Invalid("a bucket name is not empty".into()));
        }
        check_name("bucket name", name, MAX_BUCKET)?;
        Ok(Bucket {
            name: name.to_owned(),
        })
    }

    fn member(bucket: &str, key: &str) -> Result<String, KvError> {
        check_name("key", key, MAX_KEY)?;
        Ok(format!("{bucket}\0{key}"))
    }

    fn value_key(&self, member: &str) -> String {
        format!("{}v:{member}", self.base)
    }

    /// The keys a write script takes.
    fn keys(&self, member: &str) -> [String; 5] {
        [
            format!("{}index", self.base),
            format!("{}names", self.base),
            format!("{}sizes", self.base),
            format!("{}bytes", self.base),
            self.value_key(member),
        ]
    }

    fn ttl_ms(&self) -> u64 {
        self.grant.ttl.map_or(0, |t| t.as_millis().max(1) as u64)
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let member = Self::member(bucket, key)?;
        if let Some(mut m) = self.memory() {
            return Ok(m.get(bucket, key));
        }
        let mut conn = self.conn()?;
        redis::cmd("GET")
            .arg(self.value_key(&member))
            .query_async(&mut conn)
            .await
            .map_err(store_error)
    }

    pub async fn exists(&self, bucket: &str, key: &str) -> Result<bool, KvError> {
        let member = Self::member(bucket, key)?;
        if let Some(mut m) = self.memory() {
            return Ok(m.get(bucket, key).is_some());
        }
        let mut conn = self.conn()?;
        redis::cmd("EXISTS")
            .arg(self.value_key(&member))
            .query_async(&mut conn)
            .await
            .map_err(store_error)
    }

    async fn write(
        &self,
        op: &str,
        bucket: &str,
        key: &str,
        value: &[u8],
        expected: Option<Option<&[u8]>>,
    ) -> Result<redis::Value, KvError> {
        let member = Self::member(bucket, key)?;
        if value.len() as u64 > self.grant.max_bytes {
            return Err(KvError::Quota(format!(
                "a value of {} bytes is more than the queue may hold ({} bytes)",
                value.len(),
                self.grant.max_bytes
            )));
        }
        let mut inv = KV_WRITE.prepare_invoke();
        for k in self.keys(&member) {
            inv.key(k);
        }
        inv.arg(op)
            .arg(&member)
            .arg(value)
            .arg(self.ttl_ms())
            .arg(self.grant.max_keys)
            .arg(self.grant.max_bytes)
            .arg(now_ms())
            .arg(format!("{}v:", self.base));
        if let Some(expected) = expected {
            match expected {
                Some(v) => inv.arg("1").arg(v),
                None => inv.arg("0").arg(""),
            };
        }
        let mut conn = self.conn()?;
        inv.invoke_async(&mut conn).await.map_err(store_error)
    }

    pub async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        if let Some(mut m) = self.memory() {
            Self::member(bucket, key)?;
            return m.set(&self.grant, bucket, key, value.to_vec());
        }
        self.write("set", bucket, key, value, None).await.map(drop)
    }

    /// Adds `delta` to the integer value of a key (0 if absent).
    pub async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        if let Some(mut m) = self.memory() {
            Self::member(bucket, key)?;
            return m.increment(&self.grant, bucket, key, delta);
        }
        match self
            .write("incr", bucket, key, delta.to_string().as_bytes(), None)
            .await?
        {
            redis::Value::BulkString(text) => std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| KvError::Store("the stored value is not an integer".into())),
            other => Err(KvError::Store(format!("unexpected reply {other:?}"))),
        }
    }

    /// Sets a key's value if it still holds what `cas` read.
    pub async fn swap(&self, cas: &Cas, value: &[u8]) -> Result<Swapped, KvError> {
        if let Some(mut m) = self.memory() {
            Self::member(&cas.bucket, &cas.key)?;
            return m.swap(
                &self.grant,
                &cas.bucket,
                &cas.key,
                cas.current.as_deref(),
                value.to_vec(),
            );
        }
        let reply = self
            .write(
                "cas",
                &cas.bucket,
                &cas.key,
                value,
                Some(cas.current.as_deref()),
            )
            .await?;
        match reply {
            redis::Value::SimpleString(s) if s == "changed" => Ok(Swapped::Changed),
            redis::Value::BulkString(s) if s == b"changed" => Ok(Swapped::Changed),
            _ => Ok(Swapped::Yes),
        }
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        let member = Self::member(bucket, key)?;
        if let Some(mut m) = self.memory() {
            m.delete(bucket, key);
            return Ok(());
        }
        let mut inv = KV_DELETE.prepare_invoke();
        for k in self.keys(&member) {
            inv.key(k);
        }
        inv.arg(&member);
        let mut conn = self.conn()?;
        inv.invoke_async::<redis::Value>(&mut conn)
            .await
            .map(drop)
            .map_err(store_error)
    }

    /// A page of a bucket's keys after `cursor`, and the cursor of the next
    /// page if there is one.
    pub async fn list(
        &self,
        bucket: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        if let Some(mut m) = self.memory() {
            return Ok(m.list(bucket, cursor));
        }
        let mut inv = KV_LIST.prepare_invoke();
        inv.key(format!("{}index", self.base))
            .key(format!("{}names", self.base))
            .arg(format!("{bucket}\0"))
            .arg(cursor.unwrap_or(""))
            .arg(PAGE)
            .arg(now_ms());
        let mut conn = self.conn()?;
        let (keys, next): (Vec<String>, Option<String>) = match inv
            .invoke_async::<redis::Value>(&mut conn)
            .await
            .map_err(store_error)?
        {
            redis::Value::Array(parts) => {
                let keys = match parts.first() {
                    Some(redis::Value::Array(k)) => {
                        k.iter().filter_map(crate::redis::reply::string).collect()
                    }
                    _ => Vec::new(),
                };
                (keys, parts.get(1).and_then(crate::redis::reply::string))
            }
            other => return Err(KvError::Store(format!("unexpected reply {other:?}"))),
        };
        Ok((keys, next))
    }

    /// The longest a key may live, for tests and messages.
    pub fn ttl(&self) -> Option<Duration> {
        self.grant.ttl
    }
}
