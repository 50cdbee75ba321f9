//! Running plugins: one wasmtime [`Engine`] for the host, one pre-instantiated
//! component per plugin file, a fresh [`Store`] and instance per message.
//!
//! A plugin is someone else's code. It gets no ambient authority (WASI is
//! linked to an empty context: no files, environment, arguments or network),
//! a CPU and wall-clock deadline per call (epoch interruption), and a memory
//! cap per instance. A trap, a timeout or a cap hit ends that one call; the
//! host carries on.

pub mod bindings;
mod cache;
pub mod compile;
pub mod contract;
mod host;
pub mod http;
pub mod keyvalue;
pub mod mail;
// lettre marks `AsyncNetworkStream` deprecated ("not meant to be made
// public"), yet it is lettre 0.11's only way to put its TLS (the same
// certificate checks as its STARTTLS) on a socket the host opened.
pub mod output;
pub mod pools;
#[allow(deprecated)]
pub mod smtp;
pub mod sql;
mod sql_session;

pub use cache::CompileCache;
pub use compile::{CompileLimits, Compiler};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use host::{HOPS_HEADER, HostState, Published};

use bindings::{v0_1, v0_2};

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

/// How often the epoch ticks. A running plugin yields to the async runtime at
/// every tick, so one busy plugin cannot starve other queues, and a deadline
/// is noticed within one tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Component instances the pool holds at once: the sum of every queue's
/// concurrency must fit (checked at start).
pub const POOL_INSTANCES: u32 = 1024;

/// Bytes of each linear memory slot kept resident between instances.
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

/// How a queue names a handler built into the host instead of a file.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// A handler built into the host: native code, trusted, no sandbox. The
/// benchmarks measure the WebAssembly path against these, on the same
/// reading, hand-off and settling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Succeeds at once: discards a queue's messages.
    Noop,
    /// POSTs the message's body to the queue's config `url`, through the
    /// queue's HTTP client (its grant, limits and connection pool), and
    /// succeeds on a 2xx answer.
    HttpPost,
    /// A handler the program embedding the host registered with
    /// [`register_native`], by its index.
    Registered(usize),
}

/// The built-in handlers, by name.
const BUILTINS: &[(&str, Builtin)] = &[("noop", Builtin::Noop), ("http-post", Builtin::HttpPost)];

/// A native handler registered by the program that embeds the host: what
/// a benchmark measures a plugin against, with the queue's grants (its
/// SQL pool, its HTTP client) at hand in the [`CallContext`].
pub type NativeHandler = dyn for<'a> Fn(
        &'a CallContext,
        &'a Delivery,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'a>>
    + Send
    + Sync;

type Registry = std::sync::RwLock<Vec<(String, Arc<NativeHandler>)>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Makes `handler` the handler of queues whose plugin is `builtin:NAME`, in
/// this process. Registering a name again replaces the handler.
pub fn register_native(name: &str, handler: Arc<NativeHandler>) {
    let mut registry = registry().write().expect("registry lock");
    match registry.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = handler,
        None => registry.push((name.to_owned(), handler)),
    }
}

impl Builtin {
    async fn run(self, cx: &CallContext, message: &Delivery) -> Outcome {
        match self {
            Builtin::Noop => Outcome::Success,
            Builtin::HttpPost => http_post(cx, message).await,
            Builtin::Registered(index) => {
                let handler = registry().read().expect("registry lock")[index].1.clone();
                handler(cx, message).await
            }
        }
    }
}

/// [`Builtin::HttpPost`].
async fn http_post(cx: &CallContext, message: &Delivery) -> Outcome {
    use http_body_util::BodyExt;
    let retry = |reason: String| Outcome::Retry {
        reason,
        delay: None,
    };
    let Some(url) = cx.config.get("url").and_then(|v| v.as_str()) else {
        return retry("the queue's config has no `url`".into());
    };
    let body = http_body_util::Full::new(bytes::Bytes::from(message.body.clone()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let request = match ::http::Request::post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", message.id.as_str())
        .body(body)
    {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Reject {
                reason: format!("the request: {e}"),
            };
        }
    };
    let deadline = Instant::now() + cx.timeout;
    match cx.http.clone().send(request, 1, deadline, None).await {
        Ok(response) => {
            let status = response.status();
            match response.into_body().collect().await {
                Ok(_) if status.is_success() => Outcome::Success,
                Ok(_) => retry(format!("HTTP {status}")),
                Err(e) => retry(format!("reading the answer: {e}")),
            }
        }
        Err(e) => retry(e.to_string()),
    }
}

/// The built-in handler a queue's `plugin` value names, if it names one
/// (`builtin:NAME`): `Some(Err(names))`, the known names, for an unknown one.
pub fn builtin(plugin: &str) -> Option<Result<Builtin, String>> {
    let name = plugin.strip_prefix(BUILTIN_PREFIX)?;
    if let Some((_, run)) = BUILTINS.iter().find(|(n, _)| *n == name) {
        return Some(Ok(*run));
    }
    let registered = registry().read().expect("registry lock");
    if let Some(index) = registered.iter().position(|(n, _)| n == name) {
        return Some(Ok(Builtin::Registered(index)));
    }
    Some(Err(BUILTINS
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(registered.iter().map(|(n, _)| n.clone()))
        .map(|n| format!("{BUILTIN_PREFIX}{n}"))
        .collect::<Vec<_>>()
        .join(", ")))
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
    compiler: Compiler,
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

/// What an engine is for. Code compiled by a `Compile` engine runs on a
/// `Host` engine: they differ only in how instances are allocated, which
/// compiled code does not depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Runs plugins: instances come from a pool sized for every queue.
    Host,
    /// Compiles plugins in a child process that bounds its own memory, so it
    /// must not reserve the pool's address space.
    Compile,
}

/// The wasmtime configuration of every engine of the host.
pub fn engine_config(kind: EngineKind) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    if kind == EngineKind::Host {
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
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Increments the engine's epoch every [`EPOCH_TICK`] on a thread of its
/// own, for as long as anything holds the engine: a plugin still running
/// after the host let go of it (shutdown) still reaches its deadline, and
/// yields at every tick, so its runtime can drop it.
fn start_ticker(engine: &Engine) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("switchyard-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .context("starting the epoch ticker")?;
    Ok(())
}

impl PluginEngine {
    /// An engine; plugins are compiled by `compiler`, and with `cache_dir`
    /// the compiled code is kept there.
    pub fn new(cache_dir: Option<&Path>, compiler: Compiler) -> Result<Self> {
        let engine = Engine::new(&engine_config(EngineKind::Host))
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;

        // Every contract version's imports, side by side: a plugin built
        // against any of them instantiates.
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http")?;
        v0_1::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the switchyard:plugin@0.1.0 imports")?;
        // 0.2.0's own interfaces; its WASI ones are linked above.
        {
            use v0_2::switchyard::plugin::{config, log, mail, messages, publish, sql};
            use v0_2::wasi::keyvalue::{atomics, store};
            let l = &mut linker;
            messages::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                .and_then(|()| log::add_to_linker::<_, HasSelf<_>>(l, |s| s))
                .and_then(|()| config::add_to_linker::<_, HasSelf<_>>(l, |s| s))
                .and_then(|()| publish::add_to_linker::<_, HasSelf<_>>(l, |s| s))
                .and_then(|()| store::add_to_linker::<_, HasSelf<_>>(l, |s| s))
                .and_then(|()| atomics::add_to_linker::<_, HasSelf<_>>(l, |s| s))
                .and_then(|()| sql::add_to_linker::<_, HasSelf<_>>(l, |s| s))
                .and_then(|()| mail::add_to_linker::<_, HasSelf<_>>(l, |s| s))
                .map_err(anyhow::Error::from)
                .context("linking the switchyard:plugin@0.2.0 imports")?;
        }
        let cache = cache_dir
            .map(|dir| CompileCache::new(dir, &engine))
            .transpose()?;
        start_ticker(&engine)?;

        // Built last, and wrapped at once: a runtime dropped bare on an
        // async task would panic.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = PluginRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("switchyard-plugin")
                .enable_all()
                .build()
                .context("starting the plugin runtime")?,
        ));
        Ok(PluginEngine {
            engine,
            linker: Arc::new(linker),
            runtime: Arc::new(runtime),
            cache,
            compiler,
        })
    }

    /// Reads a plugin file ([`crate::files::read`]), refusing one over
    /// `limits.max_bytes`.
    pub fn read(path: &Path, limits: &LoadLimits) -> Result<PluginFile, LoadError> {
        let bytes = crate::files::read(path, limits.max_bytes).map_err(|e| match e {
            crate::files::ReadError::TooLarge { size, max } => LoadError::TooLarge(format!(
                "the file is {size} bytes, more than host.max_plugin_mib allows ({max} bytes)"
            )),
            e => LoadError::Read(e.to_string()),
        })?;
        let digest = hex(&Sha256::digest(&bytes));
        Ok(PluginFile { bytes, digest })
    }

    /// Links a compiled component and checks it against the contract.
    fn link(
        &self,
        path: &Path,
        file: &PluginFile,
        component: Component,
        compile_time: Duration,
        from_cache: bool,
    ) -> Result<LoadedPlugin, LoadError> {
        let version = contract::version_of(&self.engine, &component).map_err(|e| match e {
            contract::ExportMismatch::NoExports => LoadError::NotAComponent(e.to_string()),
            e => LoadError::WrongContract(e.to_string()),
        })?;
        let imports = contract::imports(&self.engine, &component);
        let unknown: Vec<&str> = imports
            .iter()
            .map(String::as_str)
            .filter(|i| !contract::provided(i))
            .collect();
        if !unknown.is_empty() {
            return Err(LoadError::WrongContract(format!(
                "it imports {}, which no contract version this host runs provides (contract 0.2.0 provides {})",
                unknown
                    .iter()
                    .map(|i| format!("`{i}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                contract::PROVIDED_TEXT
            )));
        }
        let initial_memory = component
            .resources_required()
            .and_then(|r| r.max_initial_memory_size)
            .map(|pages| pages.saturating_mul(64 * 1024));
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongContract(format!("{e:#}")))?;
        let wrong = |e: wasmtime::Error| LoadError::WrongContract(format!("{e:#}"));
        let code = match version {
            contract::Version::V0_1 => Code::V1(v0_1::PluginPre::new(instance_pre).map_err(wrong)?),
            contract::Version::V0_2 => Code::V2(v0_2::PluginPre::new(instance_pre).map_err(wrong)?),
        };
        Ok(LoadedPlugin {
            path: path.to_owned(),
            hash: file.digest[..16].to_owned(),
            digest: file.digest.clone(),
            compile_time,
            from_cache,
            initial_memory,
            imports,
            code,
        })
    }

    /// Reads, compiles (in a child process, or from the cache) and links a
    /// plugin. With `unless`, a file whose content hash is that digest is
    /// not loaded again: `Ok(None)`. Cancelling the future stops the
    /// compile.
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
                initial_memory: None,
                imports: Vec::new(),
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
        let started = Instant::now();
        let cached = match &self.cache {
            Some(cache) => {
                let (cache, engine, digest) =
                    (cache.clone(), self.engine.clone(), file.digest.clone());
                tokio::task::spawn_blocking(move || cache.get(&engine, &digest))
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        let (component, from_cache) = match cached {
            Some(c) => (c, true),
            None => {
                let code = self.compiler.compile(&file.bytes, limits.compile).await?;
                let component = cache::load_compiled(&self.engine, &code)
                    .map_err(|e| LoadError::Compiler(format!("loading compiled code: {e:#}")))?;
                if let Some(cache) = &self.cache {
                    cache.put(&file.digest, &code);
                }
                (component, false)
            }
        };
        self.link(path, &file, component, started.elapsed(), from_cache)
            .map(Some)
    }
}

/// Bounds on what a plugin file may cost to load.
#[derive(Debug, Clone)]
pub struct LoadLimits {
    pub max_bytes: u64,
    pub compile: CompileLimits,
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
    /// The file, or what compiling it needs, is over a bound.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    TooSlow(String),
    #[error("not a valid WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("does not fit the switchyard:plugin contract: {0}")]
    WrongContract(String),
    /// The compiler itself failed (it could not start, or died).
    #[error("{0}")]
    Compiler(String),
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
    /// The largest initial size of the plugin's linear memories, in bytes:
    /// an instance needs at least this much of its queue's `memory_mib`.
    pub initial_memory: Option<u64>,
    /// The interfaces it imports.
    pub imports: Vec<String>,
    code: Code,
}

/// What runs a plugin's handler.
enum Code {
    /// A component of contract 0.1.0, instantiated in a sandbox for each
    /// call.
    V1(v0_1::PluginPre<HostState>),
    /// A component of contract 0.2.0.
    V2(v0_2::PluginPre<HostState>),
    /// A handler built into the host.
    Builtin(Builtin),
}

/// An instantiated component.
enum Bindings {
    V1(v0_1::Plugin),
    V2(v0_2::Plugin),
}

impl LoadedPlugin {
    /// The contract version the plugin was built against, for operators.
    pub fn contract(&self) -> &'static str {
        match self.code {
            Code::V1(_) => "0.1.0",
            Code::V2(_) => "0.2.0",
            Code::Builtin(_) => "built-in",
        }
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
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
    pub metrics: Arc<crate::admin::metrics::QueueMetrics>,
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
            Outcome::Failed { kind, .. } => kind.as_str(),
        }
    }
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
        message: Delivery,
        pool: Option<Arc<WarmPool>>,
    ) -> CallResult {
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
        engine: &PluginEngine,
        cx: &CallContext,
        message: &Delivery,
        pool: Option<&WarmPool>,
    ) -> CallResult {
        if let Code::Builtin(builtin) = &self.code {
            return CallResult {
                outcome: builtin.run(cx, message).await,
                published: Vec::new(),
            };
        }
        let deadline = Instant::now() + cx.timeout;
        let mut w = match pool.and_then(WarmPool::take) {
            Some(w) => w,
            None => Warm::new(engine, cx, self),
        };
        w.prepare(cx, message, deadline);

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
        let result = tokio::time::timeout(cx.timeout, call).await;
        // Every text the plugin hands back is masked, then cut.
        let captured = w.output.take(&cx.secrets, crate::text::MAX_OUTPUT);
        let completed = matches!(result, Ok(Ok(_)));
        let outcome = match result {
            Err(_) => Outcome::Failed {
                kind: FailureKind::Timeout,
                reason: DeadlineExceeded(cx.timeout).to_string(),
            },
            Ok(Ok(outcome)) => outcome.masked(&cx.secrets),
            Ok(Err((instantiating, e))) => {
                let (kind, reason) = classify(instantiating, &e, w.store.data().limiter.exceeded());
                let reason = cx.secrets.bounded(&reason, crate::text::MAX_REASON);
                Outcome::Failed {
                    kind,
                    reason: if captured.is_empty() {
                        reason
                    } else {
                        format!("{reason}; plugin output: {captured}")
                    },
                }
            }
        };
        if !captured.is_empty() && !matches!(outcome, Outcome::Failed { .. }) {
            tracing::info!(queue = %cx.queue, msg_id = %message.id, plugin = %self.hash, output = %captured, "Plugin wrote to stdout or stderr.");
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

fn to_v1(m: &Delivery) -> v0_1::switchyard::plugin::types::Message {
    v0_1::switchyard::plugin::types::Message {
        id: m.id.clone(),
        message_type: m.message_type.clone(),
        queue: m.queue.clone(),
        body: m.body.clone(),
        headers: m.headers.clone(),
        attempt: m.attempt,
    }
}

fn to_v2(m: &Delivery) -> v0_2::switchyard::plugin::messages::Message {
    v0_2::switchyard::plugin::messages::Message {
        id: m.id.clone(),
        message_type: m.message_type.clone(),
        queue: m.queue.clone(),
        body: m.body.clone(),
        headers: m.headers.clone(),
        attempt: m.attempt,
    }
}

fn from_v1(returned: Result<(), v0_1::switchyard::plugin::types::Failure>) -> Outcome {
    use v0_1::switchyard::plugin::types::Failure;
    match returned {
        Ok(()) => Outcome::Success,
        Err(Failure::Retry(r)) => Outcome::retry(&r.reason, r.delay_ms),
        Err(Failure::Reject(reason)) => Outcome::reject(&reason),
    }
}

fn from_v2(returned: Result<(), v0_2::switchyard::plugin::messages::Failure>) -> Outcome {
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
struct Warm {
    store: Store<HostState>,
    bindings: Option<Bindings>,
    /// What the plugin writes to stdout and stderr, interleaved.
    output: output::CapturedOutput,
}

impl Warm {
    fn new(engine: &PluginEngine, cx: &CallContext, plugin: &LoadedPlugin) -> Self {
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
            outbox: host::Outbox {
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
        let mut store = Store::new(&engine.engine, state);
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
