//! Running plugins: one wasmtime [`Engine`] for the host, one pre-instantiated
//! component per plugin file, a fresh [`Store`] and instance per message.
//!
//! A plugin is someone else's code. It gets no ambient authority (WASI is
//! linked to an empty context: no files, environment, arguments or network),
//! a CPU and wall-clock deadline per call (epoch interruption), and a memory
//! cap per instance. A trap, a timeout or a cap hit ends that one call; the
//! host carries on.

mod cache;
mod host;

pub use cache::CompileCache;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use host::HostState;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
});

pub use self::switchyard::plugin::types::{Failure, Message as WitMessage, Retry};

/// How often the epoch ticks. A running plugin yields to the async runtime at
/// every tick, so one busy plugin cannot starve other queues, and a deadline
/// is noticed within one tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Component instances the pool holds at once: the sum of every queue's
/// concurrency must fit (checked at start).
pub const POOL_INSTANCES: u32 = 1024;

/// Bytes of each linear memory slot kept resident between instances.
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

/// Bytes of a plugin's stderr kept per call (a panic message fits).
const STDERR_CAPACITY: usize = 16 * 1024;

/// How a queue names a handler built into the host instead of a file.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// A handler built into the host: native code, trusted, no sandbox.
pub type Builtin = fn(&WitMessage) -> Result<(), Failure>;

/// The built-in handlers, by name. `noop` succeeds at once: it discards a
/// queue's messages, and it is the native baseline the benchmarks measure
/// the WebAssembly path against (same reading, hand-off and settling).
const BUILTINS: &[(&str, Builtin)] = &[("noop", |_| Ok(()))];

/// The built-in handler a queue's `plugin` value names, if it names one
/// (`builtin:NAME`): `Some(Err(names))`, the known names, for an unknown one.
pub fn builtin(plugin: &str) -> Option<Result<Builtin, String>> {
    let name = plugin.strip_prefix(BUILTIN_PREFIX)?;
    Some(match BUILTINS.iter().find(|(n, _)| *n == name) {
        Some((_, run)) => Ok(*run),
        None => Err(BUILTINS
            .iter()
            .map(|(n, _)| format!("{BUILTIN_PREFIX}{n}"))
            .collect::<Vec<_>>()
            .join(", ")),
    })
}

/// Whether a plugin path names a built-in handler (which has no file).
pub fn is_builtin(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with(BUILTIN_PREFIX))
}

/// The engine every plugin runs on, with its epoch ticker and the runtime
/// plugin code runs on.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    runtime: Arc<PluginRuntime>,
    cache: Option<CompileCache>,
    _ticker: Arc<Ticker>,
}

/// A tokio runtime of its own for guest code. Guest code yields only at epoch
/// ticks; on the host's main runtime, busy plugins would delay the Redis I/O
/// every queue depends on (tokio polls for I/O between tasks, not during
/// one). Here they compete only with each other, and the OS shares the cores
/// between this runtime and the main one.
struct PluginRuntime(Option<tokio::runtime::Runtime>);

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        // Dropping a runtime may block; the engine can be dropped on an async
        // task.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").finish_non_exhaustive()
    }
}

/// Increments the engine's epoch every [`EPOCH_TICK`] on a thread of its own,
/// until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// An engine; with `cache_dir`, compiled plugins are kept there.
    pub fn new(cache_dir: Option<&Path>) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        // Sized explicitly: one component instance per concurrent handler
        // call, a few core instances, memories and tables per component (a
        // Rust component has one memory; runtimes like componentize-py have
        // more), and a linear memory slot as large as the largest cap.
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(crate::config::MAX_MEMORY_MIB as usize * 1024 * 1024)
            // A fresh instance per message makes slot reuse the hot path.
            // Returning a slot's pages with madvise costs a TLB shootdown
            // across cores, and the next instance faults them back in: a
            // profile of the throughput benchmark put a quarter of the time
            // there. Keep the first pages resident and reset only those
            // the instance touched (PAGEMAP_SCAN, Linux 6.7+; memset of the
            // kept bytes elsewhere), and batch the decommits that remain.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 * 1024)
            .async_stack_keep_resident(64 * 1024)
            .decommit_batch_size(32)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the switchyard:plugin imports")?;

        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("starting the epoch ticker")?;

        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("switchyard-plugin")
            .enable_all()
            .build()
            .context("starting the plugin runtime")?;

        let cache = cache_dir
            .map(|dir| CompileCache::new(dir, &engine))
            .transpose()?;
        Ok(PluginEngine {
            engine,
            linker: Arc::new(linker),
            runtime: Arc::new(PluginRuntime(Some(runtime))),
            cache,
            _ticker: Arc::new(Ticker { stop }),
        })
    }

    /// Reads a plugin file, refusing one over `limits.max_bytes`.
    pub fn read(path: &Path, limits: &LoadLimits) -> Result<PluginFile, LoadError> {
        let size = std::fs::metadata(path)
            .map_err(|e| LoadError::Read(e.to_string()))?
            .len();
        if size > limits.max_bytes {
            return Err(LoadError::TooLarge(size, limits.max_bytes));
        }
        let bytes = std::fs::read(path).map_err(|e| LoadError::Read(e.to_string()))?;
        let digest = hex(&Sha256::digest(&bytes));
        Ok(PluginFile { bytes, digest })
    }

    /// Compiles (or takes from the cache) and links a plugin. Blocking and
    /// CPU-heavy: call it off the async runtime.
    pub fn compile(&self, path: &Path, file: &PluginFile) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let (component, from_cache) = match &self.cache {
            Some(cache) => cache.component(&self.engine, &file.bytes, &file.digest),
            None => Component::new(&self.engine, &file.bytes).map(|c| (c, false)),
        }
        .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        let compile_time = started.elapsed();
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongContract(format!("{e:#}")))?;
        let pre =
            PluginPre::new(instance_pre).map_err(|e| LoadError::WrongContract(format!("{e:#}")))?;
        Ok(LoadedPlugin {
            path: path.to_owned(),
            hash: file.digest[..16].to_owned(),
            digest: file.digest.clone(),
            compile_time,
            from_cache,
            code: Code::Component(pre),
        })
    }

    /// Reads and compiles a plugin off the async runtime, within
    /// `limits.compile_timeout`. With `unless`, a file whose content hash is
    /// that digest is not compiled again: `Ok(None)`.
    pub async fn load(
        &self,
        path: &Path,
        limits: &LoadLimits,
        unless: Option<&str>,
    ) -> Result<Option<LoadedPlugin>, LoadError> {
        if let Some((name, found)) = path.to_str().and_then(|p| Some((p, builtin(p)?))) {
            let run = found.map_err(|known| {
                LoadError::Read(format!("no such built-in handler (there are: {known})"))
            })?;
            if unless == Some(name) {
                return Ok(None);
            }
            return Ok(Some(LoadedPlugin {
                path: path.to_owned(),
                hash: name.to_owned(),
                digest: name.to_owned(),
                compile_time: Duration::ZERO,
                from_cache: false,
                code: Code::Builtin(run),
            }));
        }
        let file = {
            let (path, limits) = (path.to_owned(), limits.clone());
            tokio::task::spawn_blocking(move || Self::read(&path, &limits))
                .await
                .map_err(|e| LoadError::Read(e.to_string()))??
        };
        if unless == Some(file.digest.as_str()) {
            return Ok(None);
        }
        let engine = self.clone();
        let owned = path.to_owned();
        // A compile that overruns is abandoned (its thread finishes in the
        // background and its result is dropped); the plugin is refused.
        let compile = tokio::task::spawn_blocking(move || engine.compile(&owned, &file));
        match tokio::time::timeout(limits.compile_timeout, compile).await {
            Ok(Ok(result)) => result.map(Some),
            Ok(Err(e)) => Err(LoadError::NotAComponent(format!(
                "compilation panicked: {e}"
            ))),
            Err(_) => Err(LoadError::TooSlow(limits.compile_timeout)),
        }
    }
}

/// Bounds on what a plugin file may cost to load.
#[derive(Debug, Clone)]
pub struct LoadLimits {
    pub max_bytes: u64,
    pub compile_timeout: Duration,
}

/// A plugin file's bytes and their SHA-256.
#[derive(Debug, Clone)]
pub struct PluginFile {
    pub bytes: Vec<u8>,
    pub digest: String,
}

/// Why a plugin file was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the file: {0}")]
    Read(String),
    #[error("the file is {0} bytes, more than the {1} allowed")]
    TooLarge(u64, u64),
    #[error("compiling took longer than {0:?}")]
    TooSlow(Duration),
    #[error("not a valid WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("does not fit the switchyard:plugin@0.1.0 `plugin` world: {0}")]
    WrongContract(String),
}

/// A compiled plugin, ready to instantiate.
pub struct LoadedPlugin {
    pub path: PathBuf,
    /// First 16 hex digits of the file's SHA-256: the version that handled a
    /// message, in logs and dead-letter records.
    pub hash: String,
    /// The whole SHA-256, the key of the compiled-code cache.
    pub digest: String,
    pub compile_time: Duration,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    code: Code,
}

/// What runs a plugin's handler.
enum Code {
    /// A component, instantiated in a sandbox for each call.
    Component(PluginPre<HostState>),
    /// A handler built into the host.
    Builtin(Builtin),
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// The limits and context of one call.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub queue: Arc<str>,
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub config: Arc<serde_json::Map<String, serde_json::Value>>,
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

/// Why a call did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Trap,
    Timeout,
    MemoryCap,
    Instantiate,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryCap => "memory_cap",
            FailureKind::Instantiate => "instantiate",
        }
    }
}

/// Raised from the epoch callback when a call runs past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("handler ran past its deadline of {0:?}")]
struct DeadlineExceeded(Duration);

impl PluginEngine {
    /// Runs `plugin`'s handler on one message in a fresh instance, on the
    /// plugin runtime.
    pub async fn call(
        &self,
        plugin: Arc<LoadedPlugin>,
        cx: CallContext,
        message: WitMessage,
        pool: Option<Arc<WarmPool>>,
    ) -> Outcome {
        let engine = self.clone();
        let timeout = cx.timeout;
        let rt = self
            .runtime
            .0
            .as_ref()
            .expect("the runtime lives as long as the engine");
        let task =
            rt.spawn(async move { plugin.handle(&engine, &cx, &message, pool.as_deref()).await });
        let abort = task.abort_handle();
        // The call enforces its own deadline; this is the backstop should the
        // plugin runtime itself be stuck.
        match tokio::time::timeout(timeout + Duration::from_secs(1), task).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Outcome::Failed {
                kind: FailureKind::Trap,
                reason: format!("the handler task failed: {e}"),
            },
            Err(_) => {
                abort.abort();
                Outcome::Failed {
                    kind: FailureKind::Timeout,
                    reason: DeadlineExceeded(timeout).to_string(),
                }
            }
        }
    }
}

impl LoadedPlugin {
    /// Runs the handler on one message in a fresh instance, on the current
    /// runtime.
    async fn handle(
        &self,
        engine: &PluginEngine,
        cx: &CallContext,
        message: &WitMessage,
        pool: Option<&WarmPool>,
    ) -> Outcome {
        let pre = match &self.code {
            Code::Component(pre) => pre,
            Code::Builtin(run) => return outcome_of(run(message)),
        };
        let deadline = Instant::now() + cx.timeout;
        let mut w = match pool.and_then(WarmPool::take) {
            Some(w) => w,
            None => Warm::new(engine, cx, self),
        };
        w.prepare(message, deadline, cx.timeout);

        let call = async {
            if w.bindings.is_none() {
                let bindings = pre
                    .instantiate_async(&mut w.store)
                    .await
                    .map_err(|e| (true, e))?;
                w.bindings = Some(bindings);
            }
            let bindings = w.bindings.as_ref().expect("instantiated above");
            bindings
                .switchyard_plugin_handler()
                .call_handle(&mut w.store, message)
                .await
                .map_err(|e| (false, e))
        };
        // The epoch callback stops guest code; this also stops a call parked
        // in an async host import past its deadline.
        let result = tokio::time::timeout(cx.timeout, call).await;
        let written = w.stderr.contents();
        let captured = String::from_utf8_lossy(&written[w.stderr_seen.min(written.len())..])
            .trim()
            .to_owned();
        w.stderr_seen = written.len();
        let completed = matches!(result, Ok(Ok(_)));
        let outcome = match result {
            Err(_) => Outcome::Failed {
                kind: FailureKind::Timeout,
                reason: DeadlineExceeded(cx.timeout).to_string(),
            },
            Ok(Ok(returned)) => outcome_of(returned),
            Ok(Err((instantiating, e))) => {
                let (kind, reason) = classify(instantiating, &e, w.store.data().limiter.exceeded());
                Outcome::Failed {
                    kind,
                    reason: if captured.is_empty() {
                        reason
                    } else {
                        format!("{reason}; plugin stderr: {captured}")
                    },
                }
            }
        };
        if !captured.is_empty() && !matches!(outcome, Outcome::Failed { .. }) {
            tracing::info!(queue = %cx.queue, msg_id = %message.id, plugin = %self.hash, stderr = %captured, "Plugin wrote to stderr.");
        }
        // Only an instance whose call completed is kept: after a trap, a
        // timeout or a cap hit it cannot (or must not) be entered again.
        if let Some(pool) = pool
            && completed
            && w.stderr_seen < STDERR_CAPACITY / 2
        {
            pool.put(w);
        }
        outcome
    }
}

/// The outcome a handler returned.
fn outcome_of(returned: Result<(), Failure>) -> Outcome {
    match returned {
        Ok(()) => Outcome::Success,
        Err(Failure::Retry(r)) => Outcome::Retry {
            reason: r.reason,
            delay: r.delay_ms.map(Duration::from_millis),
        },
        Err(Failure::Reject(reason)) => Outcome::Reject { reason },
    }
}

/// A store with its instance, kept between calls when the queue reuses
/// instances.
struct Warm {
    store: Store<HostState>,
    bindings: Option<Plugin>,
    stderr: MemoryOutputPipe,
    /// Bytes of stderr already reported.
    stderr_seen: usize,
}

impl Warm {
    fn new(engine: &PluginEngine, cx: &CallContext, plugin: &LoadedPlugin) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone());
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: host::MemoryCap::new(cx.memory_bytes),
            queue: cx.queue.clone(),
            message_id: String::new(),
            plugin: plugin.hash.clone(),
            config: cx.config.clone(),
            log_lines: 0,
        };
        let mut store = Store::new(&engine.engine, state);
        store.limiter(|s| &mut s.limiter);
        Warm {
            store,
            bindings: None,
            stderr,
            stderr_seen: 0,
        }
    }

    /// Sets up the store for one call: the message it logs for, and the
    /// call's deadline (epoch deadlines are absolute: set before every call).
    fn prepare(&mut self, message: &WitMessage, deadline: Instant, timeout: Duration) {
        let state = self.store.data_mut();
        state.message_id.clone_from(&message.id);
        state.log_lines = 0;
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

fn classify(
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

fn hex(bytes: &[u8]) -> String {
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
