//! queues.toml as written: serde structs, strict about keys
//! (`deny_unknown_fields`), lenient about values ([`Setting`]), so that one
//! wrong value never hides the others. [`super::parse`] reads a file into
//! them; [`super::validate`] checks and converts them.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// One value of the file, with where it is: the value read as `T`, or the
/// TOML type found instead (which validation reports with what was
/// expected). Reading a setting never fails, so every wrong value of a file
/// is reported at once.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub span: Range<usize>,
    pub value: Result<T, &'static str>,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Setting<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<toml::Value>::deserialize(d)?;
        let span = spanned.span();
        let value = spanned.into_inner();
        let found = value.type_str();
        Ok(Setting {
            span,
            value: T::deserialize(value).map_err(|_| found),
        })
    }
}

/// A value that may come from the environment: `"text"` or
/// `{ env = "NAME" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MaybeSecret {
    Text(String),
    Env(EnvRef),
}

/// `{ env = "NAME" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvRef {
    pub env: String,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub host: Option<RawHost>,
    pub ingress: Option<RawIngress>,
    pub retention: Option<RawRetention>,
    pub admin: Option<RawAdmin>,
    pub redis: Option<RawRedis>,
    pub routes: Option<BTreeMap<String, Setting<RawRoute>>>,
    pub queues: Option<BTreeMap<String, RawQueue>>,
}

/// A route: the queues a message type fans out to, `["A", "B"]`, or a
/// table, `{ queues = ["A", "B"], validate = true }`, whose keys
/// validation checks one by one.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawRoute {
    Queues(Vec<String>),
    Table(BTreeMap<String, toml::Value>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub prefix: Option<Setting<String>>,
    pub shutdown_timeout: Option<Setting<String>>,
    pub cache_dir: Option<Setting<String>>,
    pub plugin_compile_timeout: Option<Setting<String>>,
    pub plugin_compile_memory_mib: Option<Setting<i64>>,
    pub max_plugin_mib: Option<Setting<i64>>,
    pub on_missing_group: Option<Setting<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngress {
    pub stream: Option<Setting<String>>,
    pub batch: Option<Setting<i64>>,
    pub visibility_timeout: Option<Setting<String>>,
    pub max_entry_kib: Option<Setting<i64>>,
    pub partitions: Option<Setting<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub username: Option<Setting<MaybeSecret>>,
    pub password: Option<Setting<MaybeSecret>>,
    pub ca_file: Option<Setting<String>>,
    pub sentinel_username: Option<Setting<MaybeSecret>>,
    pub sentinel_password: Option<Setting<MaybeSecret>>,
    pub wait_replicas: Option<Setting<i64>>,
    pub wait_timeout: Option<Setting<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub interval: Option<Setting<String>>,
    pub keep_handled: Option<Setting<String>>,
    pub dead_letter_age: Option<Setting<String>>,
    pub dead_letter_max_len: Option<Setting<i64>>,
    pub idle_consumer: Option<Setting<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Setting<String>>,
    pub stats_interval: Option<Setting<String>>,
    pub tls_cert: Option<Setting<String>>,
    pub tls_key: Option<Setting<String>>,
    pub hosts: Option<Setting<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub plugin: Option<Setting<String>>,
    /// A number, or `{ min, max }`: read by validation, which names a
    /// wrong key inside it.
    pub concurrency: Option<Spanned<toml::Value>>,
    pub handler_timeout: Option<Setting<String>>,
    pub memory_mib: Option<Setting<i64>>,
    pub max_entry_kib: Option<Setting<i64>>,
    pub visibility_timeout: Option<Setting<String>>,
    pub max_attempts: Option<Setting<i64>>,
    pub max_trap_attempts: Option<Setting<i64>>,
    pub retry_quick: Option<Setting<i64>>,
    pub retry_quick_delay: Option<Setting<String>>,
    pub retry_delay: Option<Setting<String>>,
    pub retry_delay_max: Option<Setting<String>>,
    pub reuse_instances: Option<Setting<bool>>,
    pub config: Option<BTreeMap<String, Spanned<toml::Value>>>,
    pub allowed_hosts: Option<Setting<Vec<String>>>,
    pub http_timeout: Option<Setting<String>>,
    pub max_response_kib: Option<Setting<i64>>,
    pub max_requests_per_call: Option<Setting<i64>>,
    pub max_connections_per_host: Option<Setting<i64>>,
    pub http_keep_alive: Option<Setting<bool>>,
    pub http_ca_file: Option<Setting<String>>,
    pub keyvalue: Option<RawKeyValue>,
    pub publish: Option<Setting<Vec<String>>>,
    pub max_publish_per_call: Option<Setting<i64>>,
    pub max_hops: Option<Setting<i64>>,
    pub sql: Option<RawSql>,
    pub mail: Option<RawMail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyValue {
    pub max_keys: Option<Setting<i64>>,
    pub max_kib: Option<Setting<i64>>,
    pub ttl: Option<Setting<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSql {
    pub database_url: Option<Setting<MaybeSecret>>,
    pub ca_file: Option<Setting<String>>,
    pub pool: Option<Setting<i64>>,
    pub timeout: Option<Setting<String>>,
    pub max_rows: Option<Setting<i64>>,
    pub max_result_kib: Option<Setting<i64>>,
    pub migrations: Option<Setting<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    pub smtp_url: Option<Setting<MaybeSecret>>,
    pub username: Option<Setting<MaybeSecret>>,
    pub password: Option<Setting<MaybeSecret>>,
    pub ca_file: Option<Setting<String>>,
    pub pool: Option<Setting<i64>>,
    pub timeout: Option<Setting<String>>,
    pub from: Option<Setting<Vec<String>>>,
    pub max_per_call: Option<Setting<i64>>,
    pub max_recipients: Option<Setting<i64>>,
    pub max_kib: Option<Setting<i64>>,
}
