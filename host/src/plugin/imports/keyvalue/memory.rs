//! Key-value buckets in this process's memory, with the same rules as the
//! Redis-backed store (names, quota of keys and bytes, expiry, integers,
//! compare-and-swap): for `switchyard invoke`, which runs a plugin on one
//! message without Redis, seeded from a file and shown after.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::outcome::{KvError, Swapped};
use crate::config::KeyValueGrant;

/// Keys one `list-keys` call returns (as the Redis store).
const PAGE: usize = 100;

/// One stored value.
#[derive(Debug, Clone)]
struct Value {
    bytes: Vec<u8>,
    expires: Option<Instant>,
}

/// A queue's buckets in memory.
#[derive(Debug, Default)]
pub struct MemoryKv {
    /// (bucket, key) to value.
    values: BTreeMap<(String, String), Value>,
    /// Keys written by the calls, in order, for the report.
    written: Vec<(String, String)>,
}

impl MemoryKv {
    /// Buckets holding `seed`: bucket to key to value.
    pub fn seeded(seed: BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> Self {
        let mut kv = MemoryKv::default();
        for (bucket, keys) in seed {
            for (key, bytes) in keys {
                kv.values.insert(
                    (bucket.clone(), key),
                    Value {
                        bytes,
                        expires: None,
                    },
                );
            }
        }
        kv
    }

    /// Every live value: bucket to key to value.
    pub fn contents(&mut self) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        self.forget_expired();
        let mut out: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for ((bucket, key), v) in &self.values {
            out.entry(bucket.clone())
                .or_default()
                .insert(key.clone(), v.bytes.clone());
        }
        out
    }

    /// The (bucket, key) pairs the calls wrote or deleted, each once, in
    /// the order first written.
    pub fn written(&self) -> &[(String, String)] {
        &self.written
    }

    fn forget_expired(&mut self) {
        let now = Instant::now();
        self.values.retain(|_, v| v.expires.is_none_or(|e| e > now));
    }

    fn touched(&mut self, bucket: &str, key: &str) {
        let k = (bucket.to_owned(), key.to_owned());
        if !self.written.contains(&k) {
            self.written.push(k);
        }
    }

    pub fn get(&mut self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.forget_expired();
        self.values
            .get(&(bucket.to_owned(), key.to_owned()))
            .map(|v| v.bytes.clone())
    }

    /// Writes `value` within `grant`'s quota.
    pub fn set(
        &mut self,
        grant: &KeyValueGrant,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), KvError> {
        self.forget_expired();
        let k = (bucket.to_owned(), key.to_owned());
        let old = self.values.get(&k).map_or(0, |v| v.bytes.len() as u64);
        if !self.values.contains_key(&k) && self.values.len() as u64 + 1 > grant.max_keys {
            return Err(KvError::Quota(format!(
                "the queue may hold at most {} keys",
                grant.max_keys
            )));
        }
        let bytes: u64 = self.values.values().map(|v| v.bytes.len() as u64).sum();
        if bytes - old + value.len() as u64 > grant.max_bytes {
            return Err(KvError::Quota(format!(
                "the queue may hold at most {} bytes of values",
                grant.max_bytes
            )));
        }
        let expires = grant
            .ttl
            .map(|t| Instant::now() + t.max(Duration::from_millis(1)));
        self.values.insert(
            k,
            Value {
                bytes: value,
                expires,
            },
        );
        self.touched(bucket, key);
        Ok(())
    }

    pub fn increment(
        &mut self,
        grant: &KeyValueGrant,
        bucket: &str,
        key: &str,
        delta: i64,
    ) -> Result<i64, KvError> {
        let current = match self.get(bucket, key) {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| KvError::Invalid("the value is not a 64-bit integer".into()))?,
        };
        let new = current.checked_add(delta).ok_or_else(|| {
            KvError::Invalid("the value is not a 64-bit integer (overflow)".into())
        })?;
        self.set(grant, bucket, key, new.to_string().into_bytes())?;
        Ok(new)
    }

    /// Sets `value` if the key still holds `expected`.
    pub fn swap(
        &mut self,
        grant: &KeyValueGrant,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Vec<u8>,
    ) -> Result<Swapped, KvError> {
        if self.get(bucket, key).as_deref() != expected {
            return Ok(Swapped::Changed);
        }
        self.set(grant, bucket, key, value)?;
        Ok(Swapped::Yes)
    }

    pub fn delete(&mut self, bucket: &str, key: &str) {
        self.values.remove(&(bucket.to_owned(), key.to_owned()));
        self.touched(bucket, key);
    }

    /// A page of a bucket's keys after `cursor`, in order.
    pub fn list(&mut self, bucket: &str, cursor: Option<&str>) -> (Vec<String>, Option<String>) {
        self.forget_expired();
        let mut keys: Vec<String> = self
            .values
            .keys()
            .filter(|(b, k)| b == bucket && cursor.is_none_or(|c| k.as_str() > c))
            .map(|(_, k)| k.clone())
            .take(PAGE + 1)
            .collect();
        let more = keys.len() > PAGE;
        keys.truncate(PAGE);
        let next = more.then(|| keys.last().cloned()).flatten();
        (keys, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(max_keys: u64, max_bytes: u64) -> KeyValueGrant {
        KeyValueGrant {
            max_keys,
            max_bytes,
            ttl: None,
        }
    }

    #[test]
    fn values_quota_integers_and_swaps() {
        let g = grant(2, 10);
        let mut kv = MemoryKv::default();
        kv.set(&g, "b", "a", b"12345".to_vec()).unwrap();
        assert_eq!(kv.get("b", "a").as_deref(), Some(&b"12345"[..]));
        assert!(matches!(
            kv.set(&g, "b", "c", b"123456".to_vec()),
            Err(KvError::Quota(_))
        ));
        assert_eq!(kv.increment(&g, "b", "n", 5).unwrap(), 5);
        assert!(matches!(
            kv.set(&g, "b", "x", b"1".to_vec()),
            Err(KvError::Quota(_))
        ));
        assert!(matches!(kv.increment(&g, "b", "a", 1), Ok(12346)));
        assert_eq!(
            kv.swap(&g, "b", "n", Some(b"4"), b"9".to_vec()).unwrap(),
            Swapped::Changed
        );
        assert_eq!(
            kv.swap(&g, "b", "n", Some(b"5"), b"9".to_vec()).unwrap(),
            Swapped::Yes
        );
        kv.delete("b", "a");
        assert_eq!(kv.list("b", None), (vec!["n".to_owned()], None));
        assert_eq!(
            kv.written(),
            [("b".into(), "a".into()), ("b".into(), "n".into())]
        );
    }
}
