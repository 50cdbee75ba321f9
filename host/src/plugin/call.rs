//! One handler call: the context of a queue's calls, a fresh store and
//! instance per message (or a warm one), the deadline, and what came of
//! it, with every text the plugin handed back masked and bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{v0_1, v0_2};
use super::*;
pub use crate::kinds::FailureKind;
use crate::message::{HOPS_HEADER, Published};

/// One message as a handler receives it, whatever its contract version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub message_type: String,
    pub queue: String,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub attempt: u32,
    /// The `traceparent` of the handling, for the plugin's outbound HTTP.
    pub trace: Option<String>,
}

impl Delivery {
    /// How many publications led to this message (`switchyard-hops`).
    pub fn hops(&self) -> u32 {
        self.headers
            .iter()
            .find(|(k, _)| k == HOPS_HEADER)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// What one call produced: its outcome and, if it succeeded, the messages it
/// published (to be added in the same step as the acknowledgement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    pub outcome: Outcome,
    pub published: Vec<Published>,
}

/// The limits, grants and context of one queue's calls.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub queue: Arc<str>,
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub config: Arc<serde_json::Map<String, serde_json::Value>>,
    /// Secret values, masked in what the plugin hands back.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Outbound HTTP: the queue's grant and pooled client.
    pub http: Arc<http::QueueHttp>,
    /// Key-value state, if granted.
    pub keyvalue: Option<keyvalue::KeyValueStore>,
    /// What the plugin may publish.
    pub publish: Arc<crate::config::PublishGrant>,
    /// The largest message it may publish.
    pub max_publish_bytes: usize,
    /// The queue's database, if granted.
    pub sql: Option<Arc<sql::QueueSql>>,
    /// The queue's mail relay, if granted.
    pub mail: Option<Arc<mail::QueueMail>>,
    /// The queue's counters.
    pub metrics: Arc<crate::metrics::QueueMetrics>,
}

/// What came of one handler call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: acknowledge.
    Success,
    /// The plugin reported a transient failure.
    Retry {
        reason: String,
        delay: Option<Duration>,
    },
    /// The plugin reported a permanent failure.
    Reject { reason: String },
    /// The call did not complete: a trap, the deadline, the memory cap, or a
    /// failure to instantiate. Counts as a failed attempt.
    Failed { kind: FailureKind, reason: String },
}

impl Outcome {
    /// The outcome's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retry { .. } => "retry",
            Outcome::Reject { .. } => "reject",
            Outcome::Failed { kind, .. } => kind.label(),
        }
    }
}

/// Raised from the epoch callback when a call runs past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("handler ran past its deadline of {0:?}")]
pub(crate) struct DeadlineExceeded(Duration);

impl PluginEngine {
    /// Runs `plugin`'s handler on one message in a fresh instance, on the
    /// plugin runtime.
    pub async fn call(
        &self,
        plugin: Arc<LoadedPlugin>,
        cx: CallContext,
        message: Delivery,
        pool: Option<Arc<WarmPool>>,
    ) -> CallResult {
        let timeout = cx.timeout;
        let rt = self
            .runtime
            .0
            .as_ref()
            .expect("the runtime lives as long as the engine");
        let task = rt.spawn(async move { plugin.handle(&cx, message, pool.as_deref()).await });
        let abort = task.abort_handle();
        let failed = |kind, reason| CallResult {
            outcome: Outcome::Failed { kind, reason },
            published: Vec::new(),
        };
        // The call enforces its own deadline; this is the backstop should the
        // plugin runtime itself be stuck.
        match tokio::time::timeout(timeout + Duration::from_secs(1), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => failed(FailureKind::Trap, format!("the handler task failed: {e}")),
            Err(_) => {
                abort.abort();
                failed(FailureKind::Timeout, DeadlineExceeded(timeout).to_string())
            }
        }
    }
}

impl LoadedPlugin {
    /// Runs the handler on one message in a fresh instance (or a warm one),
    /// on the current runtime.
    async fn handle(
        &self,
        cx: &CallContext,
        message: Delivery,
        pool: Option<&WarmPool>,
    ) -> CallResult {
        if let Code::Builtin(builtin) = &self.code {
            return CallResult {
                outcome: builtin.run(cx, &message).await,
                published: Vec::new(),
            };
        }
        let deadline = Instant::now() + cx.timeout;
        let mut w = match pool.and_then(WarmPool::take) {
            Some(w) => w,
            None => Warm::new(cx, self),
        };
        w.prepare(cx, &message, deadline);
        let msg_id = message.id.clone();
        // The message moves into the call's arguments: its body is not
        // copied on the host side.
        let mut message = Some(message);

        let call = async {
            if w.bindings.is_none() {
                let bindings = match &self.code {
                    Code::V1(pre) => pre.instantiate_async(&mut w.store).await.map(Bindings::V1),
                    Code::V2(pre) => pre.instantiate_async(&mut w.store).await.map(Bindings::V2),
                    Code::Builtin(_) => unreachable!("handled above"),
                }
                .map_err(|e| (true, e))?;
                w.bindings = Some(bindings);
            }
            let message = message.take().expect("a call is made once");
            match w.bindings.as_ref().expect("instantiated above") {
                Bindings::V1(b) => b
                    .switchyard_plugin_handler()
                    .call_handle(&mut w.store, &to_v1(message))
                    .await
                    .map(from_v1),
                Bindings::V2(b) => b
                    .switchyard_plugin_handler()
                    .call_handle(&mut w.store, &to_v2(message))
                    .await
                    .map(from_v2),
            }
            .map_err(|e| (false, e))
        };
        // The epoch callback stops guest code; this also stops a call parked
        // in an async host import (an HTTP request, Redis) past its deadline.
        let result = tokio::time::timeout_at(deadline.into(), call).await;
        // A call that returns once its deadline has passed ran out of time
        // too: the deadline cut its I/O (an answer read to its end, a
        // statement) at the same instant, and what it returns then is its
        // reaction to that cut, not its verdict on the message.
        let late = Instant::now() >= deadline;
        // Every text the plugin hands back is masked, then cut.
        let captured = w.output.take(&cx.secrets, crate::text::MAX_OUTPUT);
        let completed = matches!(result, Ok(Ok(_)));
        let timed_out = || Outcome::Failed {
            kind: FailureKind::Timeout,
            reason: DeadlineExceeded(cx.timeout).to_string(),
        };
        let outcome = match result {
            Err(_) => timed_out(),
            Ok(Ok(_)) if late => timed_out(),
            Ok(Ok(outcome)) => outcome.masked(&cx.secrets),
            Ok(Err((instantiating, e))) => {
                let (kind, reason) = classify(instantiating, &e, w.store.data().limiter.exceeded());
                let reason = cx.secrets.bounded(&reason, crate::text::MAX_REASON);
                let reason = match (kind, language_error(&captured)) {
                    // The language's own words for the bug, not the
                    // runtime's backtrace around them (logged instead).
                    (FailureKind::Trap, Some((error, printed))) => {
                        tracing::debug!(queue = %cx.queue, msg_id = %msg_id, plugin = %self.hash, output = %captured, "Plugin output of a trap.");
                        if printed.is_empty() {
                            format!("plugin trapped: {error}")
                        } else {
                            format!("plugin trapped: {error}; plugin output: {printed}")
                        }
                    }
                    _ if captured.is_empty() => reason,
                    _ => format!("{reason}; plugin output: {captured}"),
                };
                Outcome::Failed { kind, reason }
            }
        };
        if !captured.is_empty() && !matches!(outcome, Outcome::Failed { .. }) {
            tracing::info!(queue = %cx.queue, msg_id = %msg_id, plugin = %self.hash, output = %captured, "Plugin wrote to stdout or stderr.");
        }
        // A transaction the call left open is rolled back now, not when
        // the instance is next used or dropped; its requests and response
        // bodies are closed.
        w.store.data_mut().sql.finish();
        w.store.data().http.scope.end();
        // What the call published goes out only with a success.
        let published = std::mem::take(&mut w.store.data_mut().outbox.messages);
        let published = if outcome == Outcome::Success {
            published
        } else {
            Vec::new()
        };
        // Only an instance whose call completed is kept: after a trap, a
        // timeout or a cap hit it cannot (or must not) be entered again.
        if let Some(pool) = pool
            && completed
        {
            pool.put(w);
        }
        CallResult { outcome, published }
    }
}

pub(crate) fn to_v1(m: Delivery) -> v0_1::switchyard::plugin::types::Message {
    v0_1::switchyard::plugin::types::Message {
        id: m.id,
        message_type: m.message_type,
        queue: m.queue,
        body: m.body,
        headers: m.headers,
        attempt: m.attempt,
    }
}

pub(crate) fn to_v2(m: Delivery) -> v0_2::switchyard::plugin::messages::Message {
    v0_2::switchyard::plugin::messages::Message {
        id: m.id,
        message_type: m.message_type,
        queue: m.queue,
        body: m.body,
        headers: m.headers,
        attempt: m.attempt,
    }
}

pub(crate) fn from_v1(returned: Result<(), v0_1::switchyard::plugin::types::Failure>) -> Outcome {
    use v0_1::switchyard::plugin::types::Failure;
    match returned {
        Ok(()) => Outcome::Success,
        Err(Failure::Retry(r)) => Outcome::retry(&r.reason, r.delay_ms),
        Err(Failure::Reject(reason)) => Outcome::reject(&reason),
    }
}

pub(crate) fn from_v2(
    returned: Result<(), v0_2::switchyard::plugin::messages::Failure>,
) -> Outcome {
    use v0_2::switchyard::plugin::messages::Failure;
    match returned {
        Ok(()) => Outcome::Success,
        Err(Failure::Retry(r)) => Outcome::retry(&r.reason, r.delay_ms),
        Err(Failure::Reject(reason)) => Outcome::reject(&reason),
    }
}

impl Outcome {
    /// A retry the plugin asked for; its reason is masked and cut by
    /// [`Outcome::masked`].
    fn retry(reason: &str, delay_ms: Option<u64>) -> Outcome {
        Outcome::Retry {
            reason: reason.to_owned(),
            delay: delay_ms.map(Duration::from_millis),
        }
    }

    fn reject(reason: &str) -> Outcome {
        Outcome::Reject {
            reason: reason.to_owned(),
        }
    }

    /// The outcome with the queue's secrets masked in its reason, which is
    /// then cut to [`crate::text::MAX_REASON`] bytes.
    fn masked(self, secrets: &crate::secrets::Secrets) -> Outcome {
        let bounded = |reason: &str| secrets.bounded(reason, crate::text::MAX_REASON);
        match self {
            Outcome::Retry { reason, delay } => Outcome::Retry {
                reason: bounded(&reason),
                delay,
            },
            Outcome::Reject { reason } => Outcome::Reject {
                reason: bounded(&reason),
            },
            Outcome::Failed { kind, reason } => Outcome::Failed {
                kind,
                reason: bounded(&reason),
            },
            Outcome::Success => Outcome::Success,
        }
    }
}

/// A store with its instance, kept between calls when the queue reuses
/// instances.
pub(crate) struct Warm {
    pub(crate) store: Store<HostState>,
    pub(crate) bindings: Option<Bindings>,
    /// What the plugin writes to stdout and stderr, interleaved.
    pub(crate) output: output::CapturedOutput,
}

impl Warm {
    fn new(cx: &CallContext, plugin: &LoadedPlugin) -> Self {
        let output = output::CapturedOutput::default();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.clone()).stderr(output.clone());
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: host::MemoryCap::new(cx.memory_bytes),
            queue: cx.queue.clone(),
            message_id: String::new(),
            plugin: plugin.hash.clone(),
            config: cx.config.clone(),
            secrets: cx.secrets.clone(),
            log_lines: 0,
            http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
            http: http::CallHttp {
                queue: cx.http.clone(),
                deadline: Instant::now(),
                sent: 0,
                traceparent: None,
                scope: Arc::default(),
            },
            keyvalue: cx.keyvalue.clone(),
            outbox: crate::plugin::imports::publish::Outbox {
                grant: cx.publish.clone(),
                max_bytes: cx.max_publish_bytes,
                ..Default::default()
            },
            sql: sql::CallSql {
                queue: cx.sql.clone(),
                ..Default::default()
            },
            mail: mail::CallMail {
                queue: cx.mail.clone(),
                ..Default::default()
            },
            metrics: cx.metrics.clone(),
        };
        let mut store = Store::new(&plugin.engine, state);
        store.limiter(|s| &mut s.limiter);
        Warm {
            store,
            bindings: None,
            output,
        }
    }

    /// Sets up the store for one call: the message it logs and publishes
    /// for, and the call's deadline (epoch deadlines are absolute: set before
    /// every call).
    fn prepare(&mut self, cx: &CallContext, message: &Delivery, deadline: Instant) {
        let state = self.store.data_mut();
        state.message_id.clone_from(&message.id);
        state.log_lines = 0;
        state.http.deadline = deadline;
        state.http.sent = 0;
        state.http.traceparent.clone_from(&message.trace);
        state.http.scope = Arc::default();
        state.outbox.messages.clear();
        state.outbox.parent_id.clone_from(&message.id);
        state.outbox.parent_hops = message.hops();
        state.sql.finish();
        state.sql.deadline = Some(deadline);
        state.mail.deadline = Some(deadline);
        state.mail.message_id.clone_from(&message.id);
        state.mail.sent = 0;
        let timeout = cx.timeout;
        self.store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(DeadlineExceeded(timeout).into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        self.store.set_epoch_deadline(1);
    }
}

/// Instances kept warm for one queue's current plugin version and settings
/// (a reload makes a new pool, so a swapped plugin never runs on a stale
/// instance). At most the queue's concurrency are ever out at once.
#[derive(Default)]
pub struct WarmPool(std::sync::Mutex<Vec<Warm>>);

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool").finish_non_exhaustive()
    }
}

impl WarmPool {
    fn take(&self) -> Option<Warm> {
        self.0.lock().expect("warm pool lock").pop()
    }

    fn put(&self, warm: Warm) {
        self.0.lock().expect("warm pool lock").push(warm);
    }
}

pub(crate) fn classify(
    instantiating: bool,
    e: &wasmtime::Error,
    memory_exceeded: Option<usize>,
) -> (FailureKind, String) {
    if let Some(deadline) = e.downcast_ref::<DeadlineExceeded>() {
        return (FailureKind::Timeout, deadline.to_string());
    }
    if let Some(cap) = memory_exceeded {
        return (
            FailureKind::MemoryCap,
            format!(
                "plugin exceeded its memory cap of {} MiB",
                cap / (1024 * 1024)
            ),
        );
    }
    if instantiating {
        return (
            FailureKind::Instantiate,
            format!("instantiating the plugin failed: {e:#}"),
        );
    }
    let detail = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{e:#}"),
    };
    (FailureKind::Trap, format!("plugin trapped: {detail}"))
}

/// The line of a trapped call's output that names the programming error in
/// the plugin's language: the kits' `uncaught <Type>: <message> (<place>)`
/// (Python, JavaScript), the exception line of Python's last traceback, or
/// Rust's `panicked at <place>:` with its message; and what the plugin
/// printed before it. What the runtime wrote after it (a backtrace, its
/// own abort) is left out.
fn language_error(output: &str) -> Option<(String, String)> {
    let lines: Vec<&str> = output.lines().collect();
    let before = |at: usize| lines[..at].join("\n").trim().to_owned();
    if let Some(at) = lines.iter().position(|l| l.starts_with("uncaught ")) {
        return Some((lines[at].trim().to_owned(), before(at)));
    }
    let first_traceback = lines
        .iter()
        .position(|l| l.starts_with("Traceback (most recent call last):"));
    if let Some(first) = first_traceback {
        let last = lines
            .iter()
            .rposition(|l| l.starts_with("Traceback (most recent call last):"))
            .unwrap_or(first);
        let exception = lines[last + 1..]
            .iter()
            .find(|l| !l.is_empty() && !l.starts_with(char::is_whitespace));
        if let Some(line) = exception {
            return Some((line.trim().to_owned(), before(first)));
        }
    }
    let at = lines.iter().position(|l| l.contains("panicked at "))?;
    let line = lines[at];
    let place = line[line.find("panicked at ")?..].trim_end_matches(':');
    let error = match lines
        .get(at + 1)
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
    {
        Some(message) => format!("{place}: {message}"),
        None => place.to_owned(),
    };
    Some((error, before(at)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::language_error;

    #[test]
    fn a_trap_keeps_the_language_s_words_for_the_bug() {
        let js = "uncaught TypeError: can't access property \"boom\" of null (handle@plugin.js:47:28)\n\
                  invalid variant tag value `undefined`\nStack:\n  export_handler@initializer.js:9206:17\n";
        assert_eq!(
            language_error(js).unwrap().0,
            "uncaught TypeError: can't access property \"boom\" of null (handle@plugin.js:47:28)"
        );
        let python = "Traceback (most recent call last):\n  File \"/0/app.py\", line 37, in handle\n\
                      KeyError: 'ChatGuid'\n\nDuring handling of the above exception, another exception occurred:\n\n\
                      Traceback (most recent call last):\n  File \"/0/app.py\", line 39, in handle\n\
                      ValueError: no chat\n\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\n\
                      Python function threw an unexpected exception\n";
        assert_eq!(language_error(python).unwrap().0, "ValueError: no chat");
        let rust = "hello from stdout\nthread '<unnamed>' panicked at src/lib.rs:12:9:\nboom\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            language_error(rust).unwrap(),
            (
                "panicked at src/lib.rs:12:9: boom".to_owned(),
                "hello from stdout".to_owned()
            )
        );
        assert_eq!(language_error("some output\n"), None);
    }
}
