//! The host side of one plugin call: its state, the memory cap, and the
//! imports of every contract version: `log` and `config` (0.1.0 and
//! 0.2.0), `publish`, key-value state and outbound HTTP (0.2.0).

use std::sync::Arc;

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{v0_1, v0_2};
use super::http::CallHttp;
use super::keyvalue::{Bucket, Cas, KeyValueStore, KvError, Swapped};
use crate::config::PublishGrant;
use crate::message::{BODY_FIELD, ID_FIELD, MAX_NAME, TYPE_FIELD};

/// Log lines one call may write; the rest are dropped (and counted in one
/// last line), so a chatty plugin cannot flood the host's log.
const MAX_LOG_LINES: u32 = 200;
/// Bytes kept of one log line.
const MAX_LOG_LINE: usize = 4096;

/// The header that counts how many publications led to a message.
pub const HOPS_HEADER: &str = "switchyard-hops";

/// A follow-up message a call published, held until the call is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub message_type: String,
    pub body: String,
    /// The plugin's headers, then `switchyard-hops`.
    pub headers: Vec<(String, String)>,
}

impl Published {
    /// The fields of its ingress entry.
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut fields = vec![
            (TYPE_FIELD.to_owned(), self.message_type.clone()),
            (ID_FIELD.to_owned(), self.id.clone()),
            (BODY_FIELD.to_owned(), self.body.clone()),
        ];
        fields.extend(self.headers.iter().cloned());
        fields
    }
}

/// What a queue lets its plugin publish, and the delivery that publishes.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    pub grant: Arc<PublishGrant>,
    /// The largest message that may be published (the ingress bound).
    pub max_bytes: usize,
    /// The delivery's message id and hops.
    pub parent_id: String,
    pub parent_hops: u32,
    pub messages: Vec<Published>,
}

impl Outbox {
    /// Holds a message for publication, or says why it cannot be.
    fn publish(
        &mut self,
        queue: &str,
        message_type: String,
        body: String,
        headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        let message_type = message_type.trim().to_owned();
        if message_type.is_empty() || message_type.len() > MAX_NAME {
            return Err(format!("a message type is 1 to {MAX_NAME} bytes"));
        }
        if !self.grant.allows(&message_type) {
            return Err(format!(
                "the queue may not publish {message_type:?} (queues.{queue}.publish)"
            ));
        }
        if self.messages.len() as u32 >= self.grant.max_per_call {
            return Err(format!(
                "a call may publish at most {} messages (queues.{queue}.max_publish_per_call)",
                self.grant.max_per_call
            ));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(&body).is_err() {
            return Err("the body is not valid JSON".into());
        }
        let reserved = [
            TYPE_FIELD,
            ID_FIELD,
            BODY_FIELD,
            HOPS_HEADER,
            "cap-msg-name",
            "cap-msg-id",
        ];
        if let Some((name, _)) = headers
            .iter()
            .find(|(n, _)| reserved.contains(&n.as_str()) || n.starts_with("dead-"))
        {
            return Err(format!("the header {name:?} is the host's to set"));
        }
        let id = published_id(&self.parent_id, queue, self.messages.len() + 1);
        let mut headers = headers;
        headers.push((HOPS_HEADER.to_owned(), (self.parent_hops + 1).to_string()));
        let published = Published {
            id: id.clone(),
            message_type,
            body,
            headers,
        };
        let bytes: usize = published
            .fields()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if bytes > self.max_bytes {
            return Err(format!(
                "the message is {bytes} bytes, more than the ingress takes ({} bytes)",
                self.max_bytes
            ));
        }
        self.messages.push(published);
        Ok(id)
    }
}

/// The id of the `n`th message a queue's delivery of `parent` publishes:
/// `<parent>/<queue>/<n>`. The same for every redelivery (a handler that
/// drops repeats by id recognises one), and different for each queue that
/// handles the parent, so two queues' follow-ups of one message are never
/// taken for repeats of each other. A parent id too long for that (a long
/// chain of publications) is replaced by its hash.
pub fn published_id(parent: &str, queue: &str, n: usize) -> String {
    let id = format!("{parent}/{queue}/{n}");
    if id.len() <= MAX_NAME {
        return id;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(parent.as_bytes());
    let hash: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hash}/{queue}/{n}")
}

/// The state of one store: one message, one call.
#[expect(missing_debug_implementations, reason = "WasiCtx has no Debug")]
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: MemoryCap,
    pub(super) queue: Arc<str>,
    pub(super) message_id: String,
    pub(super) plugin: String,
    pub(super) config: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Secret values, masked in what the plugin logs.
    pub(super) secrets: Arc<crate::secrets::Secrets>,
    pub(super) log_lines: u32,
    pub(super) http_ctx: WasiHttpCtx,
    pub(super) http: CallHttp,
    pub(super) keyvalue: Option<KeyValueStore>,
    pub(super) outbox: Outbox,
    pub(super) sql: crate::plugin::sql::CallSql,
    pub(super) mail: crate::plugin::mail::CallMail,
    /// The queue's counters: capability calls and refusals.
    pub(super) metrics: Arc<crate::admin::metrics::QueueMetrics>,
}

/// Caps linear memory growth and remembers that the cap was hit, so the trap
/// that follows is reported as what it is.
pub(super) struct MemoryCap {
    limit: usize,
    hit: bool,
}

impl MemoryCap {
    pub(super) fn new(limit: usize) -> Self {
        MemoryCap { limit, hit: false }
    }

    /// The cap, if a growth past it was refused.
    pub(super) fn exceeded(&self) -> Option<usize> {
        self.hit.then_some(self.limit)
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            // Trap rather than return -1 to the guest: most guest allocators
            // abort on failure anyway, and a trap stops the call at once.
            return Err(wasmtime::Error::msg(format!(
                "memory cap of {} bytes exceeded",
                self.limit
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The log levels of every contract version.
#[derive(Debug, Clone, Copy)]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl HostState {
    fn log(&mut self, level: Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(queue = %self.queue, msg_id = %self.message_id, plugin = %self.plugin, "Plugin log limit reached; further lines of this call are dropped.");
            }
            return;
        }
        let message = self.secrets.bounded(&message, MAX_LOG_LINE);
        let (queue, msg_id, plugin) = (&*self.queue, &self.message_id, &self.plugin);
        match level {
            Level::Trace => tracing::trace!(target: "plugin", queue, msg_id, plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", queue, msg_id, plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", queue, msg_id, plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", queue, msg_id, plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", queue, msg_id, plugin, "{message}"),
        }
    }

    fn config_get(&self, key: &str) -> Option<String> {
        self.config.get(key).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    fn config_json(&self) -> String {
        serde_json::Value::Object((*self.config).clone()).to_string()
    }
}

// switchyard:plugin@0.1.0

impl v0_1::switchyard::plugin::types::Host for HostState {}

impl v0_1::switchyard::plugin::log::Host for HostState {
    fn log(&mut self, level: v0_1::switchyard::plugin::log::Level, message: String) {
        use v0_1::switchyard::plugin::log::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        HostState::log(self, level, message);
    }
}

impl v0_1::switchyard::plugin::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config_get(&key)
    }

    fn get_json(&mut self) -> String {
        self.config_json()
    }
}

// switchyard:plugin@0.2.0

impl v0_2::switchyard::plugin::messages::Host for HostState {}

impl v0_2::switchyard::plugin::log::Host for HostState {
    fn log(&mut self, level: v0_2::switchyard::plugin::log::Level, message: String) {
        use v0_2::switchyard::plugin::log::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        HostState::log(self, level, message);
    }
}

impl v0_2::switchyard::plugin::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config_get(&key)
    }

    fn get_json(&mut self) -> String {
        self.config_json()
    }
}

impl v0_2::switchyard::plugin::publish::Host for HostState {
    fn publish(
        &mut self,
        message_type: String,
        body: String,
        headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        let queue = self.queue.clone();
        self.outbox.publish(&queue, message_type, body, headers)
    }
}

// switchyard:plugin/sql and /mail @0.2.0

mod io {
    use super::v0_2::switchyard::plugin::{mail, sql};
    use crate::plugin::mail::{Email, MailError};
    use crate::plugin::sql::{Output, SqlError, Value};

    fn value_in(v: sql::DbValue) -> Value {
        match v {
            sql::DbValue::Null => Value::Null,
            sql::DbValue::Boolean(b) => Value::Boolean(b),
            sql::DbValue::Int32(n) => Value::Int32(n),
            sql::DbValue::Int64(n) => Value::Int64(n),
            sql::DbValue::Floating64(f) => Value::Floating64(f),
            sql::DbValue::Str(s) => Value::Str(s),
            sql::DbValue::Binary(b) => Value::Binary(b),
        }
    }

    fn value_out(v: Value) -> sql::DbValue {
        match v {
            Value::Null => sql::DbValue::Null,
            Value::Boolean(b) => sql::DbValue::Boolean(b),
            Value::Int32(n) => sql::DbValue::Int32(n),
            Value::Int64(n) => sql::DbValue::Int64(n),
            Value::Floating64(f) => sql::DbValue::Floating64(f),
            Value::Str(s) => sql::DbValue::Str(s),
            Value::Binary(b) => sql::DbValue::Binary(b),
        }
    }

    fn error_out(e: SqlError) -> sql::Error {
        match e {
            SqlError::NotGranted => sql::Error::NotGranted,
            SqlError::Database {
                code,
                message,
                transient,
            } => sql::Error::Database(sql::DatabaseError {
                code,
                message,
                transient,
            }),
            SqlError::Unavailable(s) => sql::Error::Unavailable(s),
            SqlError::Timeout(s) => sql::Error::Timeout(s),
            SqlError::Invalid(s) => sql::Error::Invalid(s),
        }
    }

    impl super::HostState {
        /// Counts a statement refused for want of a grant.
        fn sql_refused<T>(&self, result: &Result<T, SqlError>) {
            if matches!(result, Err(SqlError::NotGranted)) {
                crate::admin::metrics::QueueMetrics::add(&self.metrics.sql_denied);
            }
        }
    }

    impl sql::Host for super::HostState {
        async fn query(
            &mut self,
            statement: String,
            params: Vec<sql::DbValue>,
        ) -> Result<sql::RowSet, sql::Error> {
            let params: Vec<Value> = params.into_iter().map(value_in).collect();
            let result = self.sql.run(&statement, &params, true).await;
            self.sql_refused(&result);
            match result {
                Ok(Output::Rows(set)) => Ok(sql::RowSet {
                    columns: set
                        .columns
                        .into_iter()
                        .map(|c| sql::Column {
                            name: c.name,
                            data_type: c.data_type,
                        })
                        .collect(),
                    rows: set
                        .rows
                        .into_iter()
                        .map(|r| r.into_iter().map(value_out).collect())
                        .collect(),
                }),
                Ok(Output::Affected(_)) => Ok(sql::RowSet {
                    columns: Vec::new(),
                    rows: Vec::new(),
                }),
                Err(e) => Err(error_out(e)),
            }
        }

        async fn execute(
            &mut self,
            statement: String,
            params: Vec<sql::DbValue>,
        ) -> Result<u64, sql::Error> {
            let params: Vec<Value> = params.into_iter().map(value_in).collect();
            let result = self.sql.run(&statement, &params, false).await;
            self.sql_refused(&result);
            match result {
                Ok(Output::Affected(n)) => Ok(n),
                Ok(Output::Rows(set)) => Ok(set.rows.len() as u64),
                Err(e) => Err(error_out(e)),
            }
        }

        async fn begin(&mut self) -> Result<(), sql::Error> {
            self.sql.begin().await.map_err(error_out)
        }

        async fn commit(&mut self) -> Result<(), sql::Error> {
            self.sql.end("COMMIT").await.map_err(error_out)
        }

        async fn rollback(&mut self) -> Result<(), sql::Error> {
            self.sql.end("ROLLBACK").await.map_err(error_out)
        }
    }

    impl mail::Host for super::HostState {
        async fn send(&mut self, message: mail::Email) -> Result<String, mail::Error> {
            let email = Email {
                from: message.from,
                to: message.to,
                cc: message.cc,
                bcc: message.bcc,
                reply_to: message.reply_to,
                subject: message.subject,
                text: message.text,
                html: message.html,
                headers: message.headers,
            };
            self.mail.send(email).await.map_err(|e| {
                tracing::debug!(queue = %self.queue, msg_id = %self.message_id, error = %self.secrets.mask(&e.to_string()), "A plugin's mail was not sent.");
                match e {
                MailError::NotGranted => {
                    crate::admin::metrics::QueueMetrics::add(&self.metrics.mail_denied);
                    mail::Error::NotGranted
                }
                MailError::Invalid(s) => mail::Error::Invalid(s),
                MailError::Permanent(s) => mail::Error::Permanent(s),
                MailError::Transient(s) => mail::Error::Transient(s),
            }})
        }
    }
}

// wasi:keyvalue@0.2.0-draft2

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
        use crate::admin::metrics::QueueMetrics;
        QueueMetrics::add(&self.metrics.kv_calls);
        self.keyvalue.as_ref().ok_or_else(|| {
            QueueMetrics::add(&self.metrics.kv_denied);
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
                self.metrics.timed(1, started);
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
                self.metrics.timed(1, started);
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
                self.metrics.timed(1, started);
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
                self.metrics.timed(1, started);
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
                self.metrics.timed(1, started);
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

// wasi:http

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http,
            table: &mut self.table,
            ctx: &mut self.http_ctx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(types: &[&str]) -> Outbox {
        Outbox {
            grant: Arc::new(PublishGrant {
                types: types.iter().map(|t| t.to_string()).collect(),
                max_per_call: 2,
            }),
            max_bytes: 200,
            parent_id: "m-1".into(),
            parent_hops: 3,
            messages: Vec::new(),
        }
    }

    #[test]
    fn published_ids_name_the_queue_and_stay_bounded() {
        assert_eq!(published_id("m-1", "Email", 2), "m-1/Email/2");
        let long = "x".repeat(MAX_NAME);
        let id = published_id(&long, "Email", 1);
        assert!(id.len() <= MAX_NAME, "{id}");
        assert_eq!(id, published_id(&long, "Email", 1));
        assert_ne!(id, published_id(&format!("{long}y"), "Email", 1));
        assert!(id.ends_with("/Email/1"), "{id}");
    }

    #[test]
    fn publishing_is_granted_bounded_and_numbered() {
        let mut o = outbox(&["chat.saved"]);
        assert_eq!(
            o.publish(
                "Q",
                "Chat.Saved".into(),
                "{}".into(),
                vec![("k".into(), "v".into())]
            ),
            Ok("m-1/Q/1".into())
        );
        assert_eq!(
            o.messages[0].headers,
            [
                ("k".to_string(), "v".to_string()),
                (HOPS_HEADER.to_string(), "4".to_string())
            ]
        );
        assert_eq!(
            o.publish("Q", "other".into(), "{}".into(), vec![]),
            Err("the queue may not publish \"other\" (queues.Q.publish)".into())
        );
        assert_eq!(
            o.publish("Q", "chat.saved".into(), "nope".into(), vec![]),
            Err("the body is not valid JSON".into())
        );
        assert_eq!(
            o.publish(
                "Q",
                "chat.saved".into(),
                "{}".into(),
                vec![(HOPS_HEADER.into(), "0".into())]
            ),
            Err("the header \"switchyard-hops\" is the host's to set".into())
        );
        let big = format!("\"{}\"", "x".repeat(300));
        assert!(
            o.publish("Q", "chat.saved".into(), big, vec![])
                .unwrap_err()
                .contains("more than the ingress takes")
        );
        assert_eq!(
            o.publish("Q", "chat.saved".into(), "[]".into(), vec![]),
            Ok("m-1/Q/2".into())
        );
        assert!(
            o.publish("Q", "chat.saved".into(), "[]".into(), vec![])
                .unwrap_err()
                .contains("at most 2 messages")
        );
    }
}
