//! The one wasmtime [`Engine`] of the host: its configuration (the pooling
//! allocator, epoch interruption), its epoch ticker, the linker with every
//! contract version's imports, and the runtime plugin code runs on.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{v0_1, v0_2};
use super::*;

/// How often the epoch ticks. A running plugin yields to the async runtime at
/// every tick, so one busy plugin cannot starve other queues, and a deadline
/// is noticed within one tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Component instances the pool holds at once: the sum of every queue's
/// concurrency must fit (checked at start).
pub const POOL_INSTANCES: u32 = 1024;

/// Bytes of each linear memory slot kept resident between instances.
pub(crate) const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

/// The engine every plugin runs on, with its epoch ticker and the runtime
/// plugin code runs on.
#[derive(Clone)]
pub struct PluginEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
    pub(crate) runtime: Arc<PluginRuntime>,
    pub(crate) cache: Option<CompileCache>,
    pub(crate) compiler: Compiler,
    /// Winch's engine, when large plugins start on Winch's code (see
    /// [`PluginEngine::with_baseline`]).
    pub(crate) baseline: Option<Baseline>,
}

/// The engine and linker of code compiled by Winch, and its cache. Its
/// instances are allocated on demand: they serve a new version for the
/// seconds Cranelift takes, and the pool's address space is not reserved
/// twice.
#[derive(Clone)]
pub(crate) struct Baseline {
    /// Winch's engine, whose code only it can run.
    pub(crate) engine: Engine,
    /// Every contract version's imports, for that engine.
    pub(crate) linker: Arc<Linker<HostState>>,
    /// Winch's code, beside Cranelift's in the plugin cache.
    pub(crate) cache: Option<CompileCache>,
    /// Plugin files at least this large start on Winch's code.
    pub(crate) min_bytes: usize,
    /// Winch's code even when Cranelift's is cached.
    pub(crate) always: bool,
}

/// A tokio runtime of its own for guest code. Guest code yields only at epoch
/// ticks; on the host's main runtime, busy plugins would delay the Redis I/O
/// every queue depends on (tokio polls for I/O between tasks, not during
/// one). Here they compete only with each other, and the OS shares the cores
/// between this runtime and the main one.
pub(crate) struct PluginRuntime(pub(crate) Option<tokio::runtime::Runtime>);

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

/// Which compiler makes a plugin's native code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codegen {
    /// Cranelift, the optimising compiler: the code every plugin ends up
    /// running.
    Cranelift,
    /// Winch, the baseline compiler: a single pass per function, several
    /// times faster to compile and slower to run. A new version of a large
    /// plugin runs on it until Cranelift's code is ready.
    Winch,
}

/// The wasmtime configuration of every engine of the host.
pub fn engine_config(kind: EngineKind, codegen: Codegen) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    if codegen == Codegen::Winch {
        config.strategy(wasmtime::Strategy::Winch);
        // Cranelift still compiles the trampolines between the host and
        // Winch's code; unoptimised, a Winch compile of a Python plugin
        // took 1.28 to 1.42 s instead of 1.41 to 1.54 s.
        config.cranelift_opt_level(wasmtime::OptLevel::None);
        // Winch's code serves a version for seconds. Neither the map from
        // native to wasm addresses (wasm offsets in trap backtraces; the
        // function names stay) nor native unwind tables (for debuggers and
        // profilers; wasmtime's own backtraces walk frame pointers) is worth
        // compiling, copying and registering for that.
        config.generate_address_map(false).native_unwind_info(false);
    }
    if kind == EngineKind::Host && codegen == Codegen::Cranelift {
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
pub(crate) fn start_ticker(engine: &Engine) -> Result<()> {
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
        let engine = Engine::new(&engine_config(EngineKind::Host, Codegen::Cranelift))
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;

        let linker = linker(&engine)?;
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
            baseline: None,
        })
    }

    /// This engine, with plugin files of `min_bytes` and more (the host
    /// uses [`BASELINE_MIN_BYTES`]) compiled by Winch and served at once,
    /// unless Cranelift's code for them is in the cache. The host replaces
    /// Winch's code by Cranelift's when it is ready (see
    /// [`PluginEngine::optimize`]). Winch's code is cached too, beside
    /// Cranelift's.
    pub fn with_baseline(mut self, min_bytes: usize) -> Result<Self> {
        let engine = Engine::new(&engine_config(EngineKind::Host, Codegen::Winch))
            .map_err(anyhow::Error::from)
            .context("creating the Winch engine")?;
        let linker = linker(&engine)?;
        let cache = match &self.cache {
            Some(c) => Some(CompileCache::new(c.dir(), &engine)?.keeping(BASELINE_CACHED)),
            None => None,
        };
        start_ticker(&engine)?;
        self.baseline = Some(Baseline {
            engine,
            linker: Arc::new(linker),
            cache,
            min_bytes,
            always: false,
        });
        Ok(self)
    }

    /// This engine, with every plugin on Cranelift's code
    /// (`switchyard invoke --compiler cranelift`).
    pub fn cranelift_only(mut self) -> Self {
        self.baseline = None;
        self
    }

    /// This engine, with every plugin on Winch's code, whatever the cache
    /// holds (`switchyard invoke --compiler winch`).
    pub fn winch_only(self) -> Result<Self> {
        let mut engine = self.with_baseline(0)?;
        if let Some(b) = &mut engine.baseline {
            b.always = true;
        }
        Ok(engine)
    }
}

/// Components whose Winch code the cache keeps (the newest): about 45 MB
/// each for a Python plugin.
const BASELINE_CACHED: usize = 4;

/// Plugin files at least this large start on Winch's code in the host.
/// Smaller ones compile with Cranelift in a fraction of a second (a Rust
/// plugin of 300 KB: 0.15 s): a second compile would cost more than it
/// saves.
pub const BASELINE_MIN_BYTES: usize = 2 * 1024 * 1024;

/// A linker with every contract version's imports, side by side: a plugin
/// built against any of them instantiates.
fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
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
    Ok(linker)
}
