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
//!
//! The buckets live in Redis ([`buckets`]); this module is the host side of
//! `wasi:keyvalue@0.2.0-draft2` (`store`, `atomics`) over them.

pub mod buckets;
pub mod memory;
pub mod outcome;

pub use buckets::{Bucket, Cas, KeyValueStore, KvError, Swapped};
pub use memory::MemoryKv;

use wasmtime::component::Resource;

use crate::kinds::Capability;
use crate::plugin::HostState;
use crate::plugin::bindings::v0_2;

use v0_2::wasi::keyvalue::{atomics, store};

fn kv_error(e: KvError) -> store::Error {
    match e {
        KvError::NotGranted => store::Error::AccessDenied,
        other => store::Error::Other(other.to_string()),
    }
}

impl HostState {
    /// The queue's store, counting the call (and a refusal when the queue
    /// has no grant).
    fn store(&self) -> Result<&KeyValueStore, store::Error> {
        use crate::metrics::QueueMetrics;
        QueueMetrics::add(&self.metrics.kv_calls);
        self.keyvalue.as_ref().ok_or_else(|| {
            crate::events::denied(
                &self.metrics,
                &self.queue,
                Capability::KeyValue,
                "no [keyvalue] grant",
            );
            store::Error::AccessDenied
        })
    }

    fn bucket_name(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.name.clone())
    }
}

impl store::Host for HostState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, store::Error>> {
        let bucket = match self.store() {
            Ok(s) => s.open(&identifier),
            Err(e) => return Ok(Err(e)),
        };
        match bucket {
            Ok(b) => Ok(Ok(self.table.push(b)?)),
            Err(e) => Ok(Err(kv_error(e))),
        }
    }
}

impl store::HostBucket for HostState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(match self.store() {
            Ok(s) => {
                let started = std::time::Instant::now();
                let r = s.get(&name, &key).await.map_err(kv_error);
                self.metrics.timed(Capability::KeyValue, started);
                r
            }
            Err(e) => Err(e),
        })
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(match self.store() {
            Ok(s) => {
                let started = std::time::Instant::now();
                let r = s.set(&name, &key, &value).await.map_err(kv_error);
                self.metrics.timed(Capability::KeyValue, started);
                r
            }
            Err(e) => Err(e),
        })
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(match self.store() {
            Ok(s) => {
                let started = std::time::Instant::now();
                let r = s.delete(&name, &key).await.map_err(kv_error);
                self.metrics.timed(Capability::KeyValue, started);
                r
            }
            Err(e) => Err(e),
        })
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(match self.store() {
            Ok(s) => {
                let started = std::time::Instant::now();
                let r = s.exists(&name, &key).await.map_err(kv_error);
                self.metrics.timed(Capability::KeyValue, started);
                r
            }
            Err(e) => Err(e),
        })
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(match self.store() {
            Ok(s) => s
                .list(&name, cursor.as_deref())
                .await
                .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
                .map_err(kv_error),
            Err(e) => Err(e),
        })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        Ok(match self.store() {
            Ok(s) => {
                let started = std::time::Instant::now();
                let r = s.increment(&name, &key, delta).await.map_err(kv_error);
                self.metrics.timed(Capability::KeyValue, started);
                r
            }
            Err(e) => Err(e),
        })
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.get(&cas)?.clone();
        let result = match self.store() {
            Ok(s) => s.swap(&handle, &value).await,
            Err(e) => return Ok(Err(atomics::CasError::StoreError(e))),
        };
        match result {
            Ok(Swapped::Yes) => {
                self.table.delete(cas)?;
                Ok(Ok(()))
            }
            Ok(Swapped::Changed) => Ok(Err(atomics::CasError::CasFailed(cas))),
            Err(e) => {
                self.table.delete(cas)?;
                Ok(Err(atomics::CasError::StoreError(kv_error(e))))
            }
        }
    }
}

impl atomics::HostCas for HostState {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, store::Error>> {
        let name = self.bucket_name(&bucket)?;
        let current = match self.store() {
            Ok(s) => s.get(&name, &key).await,
            Err(e) => return Ok(Err(e)),
        };
        match current {
            Ok(current) => Ok(Ok(self.table.push(Cas {
                bucket: name,
                key,
                current,
            })?)),
            Err(e) => Ok(Err(kv_error(e))),
        }
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}
