//! The host side of one plugin call: its state, the memory cap, and the
//! imports of every contract version: `log` and `config` (0.1.0 and
//! 0.2.0), `publish`, key-value state and outbound HTTP (0.2.0).

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;

use super::http::CallHttp;
use super::keyvalue::KeyValueStore;
use crate::plugin::imports::publish::Outbox;

/// Log lines one call may write; the rest are dropped (and counted in one
/// last line), so a chatty plugin cannot flood the host's log.
const MAX_LOG_LINES: u32 = 200;
/// Bytes kept of one log line.
const MAX_LOG_LINE: usize = 4096;

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
    pub(super) metrics: Arc<crate::metrics::QueueMetrics>,
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
pub(crate) enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl HostState {
    pub(crate) fn log(&mut self, level: Level, message: String) {
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

    pub(crate) fn config_get(&self, key: &str) -> Option<String> {
        self.config.get(key).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    pub(crate) fn config_json(&self) -> String {
        serde_json::Value::Object((*self.config).clone()).to_string()
    }
}
