//! Loading a plugin file: read with a bound, compiled in a child process
//! (or taken from the cache), checked against the contract, linked.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::{v0_1, v0_2};
use super::engine::Baseline;
use super::*;
use crate::config::PluginRef;

impl PluginEngine {
    /// Reads a plugin file ([`crate::files::read`]), refusing one over
    /// `limits.max_bytes`.
    pub fn read(path: &Path, limits: &LoadLimits) -> Result<PluginFile, LoadError> {
        let bytes = crate::files::read(path, limits.max_bytes).map_err(|e| match e {
            crate::files::ReadError::TooLarge { size, max } => LoadError::TooLarge(format!(
                "the file is {size} bytes, more than host.max_plugin_mib allows ({max} bytes)"
            )),
            e => LoadError::Read(Arc::new(e)),
        })?;
        let digest = hex(&Sha256::digest(&bytes));
        Ok(PluginFile { bytes, digest })
    }

    /// Links a compiled component and checks it against the contract.
    fn link(
        &self,
        source: &PluginRef,
        file: &PluginFile,
        component: Component,
        codegen: Codegen,
        compile_time: Duration,
        from_cache: bool,
    ) -> Result<LoadedPlugin, LoadError> {
        let (engine, linker, cache) = match (codegen, &self.baseline) {
            (Codegen::Winch, Some(b)) => (&b.engine, &b.linker, &b.cache),
            _ => (&self.engine, &self.linker, &self.cache),
        };
        let version = contract::version_of(engine, &component).map_err(|e| match e {
            contract::ExportMismatch::NoExports => LoadError::NotAComponent(e.to_string()),
            e => LoadError::Exports(e),
        })?;
        let imports = contract::imports(engine, &component);
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
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongContract(format!("{e:#}")))?;
        let wrong = |e: wasmtime::Error| LoadError::WrongContract(format!("{e:#}"));
        let code = match version {
            contract::Version::V0_1 => Code::V1(v0_1::PluginPre::new(instance_pre).map_err(wrong)?),
            contract::Version::V0_2 => Code::V2(v0_2::PluginPre::new(instance_pre).map_err(wrong)?),
        };
        Ok(LoadedPlugin {
            source: source.clone(),
            hash: file.digest[..16].to_owned(),
            digest: file.digest.clone(),
            compile_time,
            from_cache,
            codegen: Some(codegen),
            initial_memory,
            imports,
            engine: engine.clone(),
            file: None,
            held: cache.as_ref().map(|c| c.hold(&file.digest)),
            code,
        })
    }

    /// Reads, compiles (in a child process, or from the cache) and links a
    /// plugin. With `unless`, a file whose content hash is that digest is
    /// not loaded again: `Ok(None)`. Cancelling the future stops the
    /// compile.
    pub async fn load(
        &self,
        plugin: &PluginRef,
        limits: &LoadLimits,
        unless: Option<&str>,
    ) -> Result<Option<LoadedPlugin>, LoadError> {
        let path = match plugin {
            PluginRef::File(path) => path,
            PluginRef::Builtin(name) => {
                let run = builtin(name)?;
                let shown = plugin.to_string();
                if unless == Some(shown.as_str()) {
                    return Ok(None);
                }
                return Ok(Some(LoadedPlugin {
                    source: plugin.clone(),
                    hash: shown.clone(),
                    digest: shown,
                    compile_time: Duration::ZERO,
                    from_cache: false,
                    codegen: None,
                    initial_memory: None,
                    imports: Vec::new(),
                    engine: self.engine.clone(),
                    file: None,
                    held: None,
                    code: Code::Builtin(run),
                }));
            }
        };
        let file = Self::read_async(path, limits).await?;
        if unless == Some(file.digest.as_str()) {
            return Ok(None);
        }
        self.load_file(plugin, file, limits).await.map(Some)
    }

    /// [`PluginEngine::read`], off the async runtime.
    pub async fn read_async(path: &Path, limits: &LoadLimits) -> Result<PluginFile, LoadError> {
        let (path, limits) = (path.to_owned(), limits.clone());
        tokio::task::spawn_blocking(move || Self::read(&path, &limits))
            .await
            .map_err(|e| LoadError::Compiler(format!("reading the file: {e}")))?
    }

    /// Compiles (or takes from the cache) and links a plugin file already
    /// read. Cancelling the future stops the compile.
    pub async fn load_file(
        &self,
        plugin: &PluginRef,
        file: PluginFile,
        limits: &LoadLimits,
    ) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let winch_only = self.baseline.as_ref().is_some_and(|b| b.always);
        let cached = match &self.cache {
            Some(cache) if !winch_only => cached(cache, &self.engine, &file.digest).await,
            _ => None,
        };
        if let Some(component) = cached {
            return self.link(
                plugin,
                &file,
                component,
                Codegen::Cranelift,
                started.elapsed(),
                true,
            );
        }
        if let Some(baseline) = &self.baseline
            && file.bytes.len() >= baseline.min_bytes
        {
            match self.compile_baseline(baseline, &file, limits).await {
                Ok((component, from_cache)) => {
                    let mut loaded = self.link(
                        plugin,
                        &file,
                        component,
                        Codegen::Winch,
                        started.elapsed(),
                        from_cache,
                    )?;
                    loaded.file = Some(Arc::new(file));
                    return Ok(loaded);
                }
                // Cranelift needs more time and memory than Winch; asked for
                // Winch only, its error is the answer.
                Err(e @ (LoadError::TooSlow(_) | LoadError::TooLarge(_))) => return Err(e),
                Err(e) if baseline.always => return Err(e),
                // Winch does not take every component Cranelift takes; a
                // component neither takes is refused by Cranelift below.
                Err(e) => {
                    tracing::warn!(path = %plugin, error = %e, "Winch did not compile the plugin; Cranelift compiles it, and its new versions wait for Cranelift.");
                }
            }
        }
        let component = self.compile_optimized(&file, limits).await?;
        self.link(
            plugin,
            &file,
            component,
            Codegen::Cranelift,
            started.elapsed(),
            false,
        )
    }

    /// Deletes Winch's cached code for the file of `digest`, once
    /// Cranelift's is cached: it would not be read again.
    pub async fn forget_baseline(&self, digest: &str) {
        if let Some(cache) = self.baseline.as_ref().and_then(|b| b.cache.clone()) {
            let digest = digest.to_owned();
            let _ = tokio::task::spawn_blocking(move || cache.remove(&digest)).await;
        }
    }

    /// Renews the cached code of the plugins that still run (see
    /// `cache.rs`), so that a later start finds it; off the async
    /// runtime's threads.
    pub async fn renew_cached(&self) {
        let caches: Vec<CompileCache> = self
            .cache
            .iter()
            .chain(self.baseline.iter().filter_map(|b| b.cache.as_ref()))
            .cloned()
            .collect();
        let _ =
            tokio::task::spawn_blocking(move || caches.iter().for_each(CompileCache::renew_held))
                .await;
    }

    /// Cranelift's code for a plugin that runs on Winch's (the same file,
    /// kept in `plugin.file`), linked and ready to take its place; it is
    /// kept in the cache. Cancelling the future stops the compile.
    pub async fn optimize(
        &self,
        plugin: &LoadedPlugin,
        limits: &LoadLimits,
    ) -> Result<LoadedPlugin, LoadError> {
        let Some(file) = &plugin.file else {
            return Err(LoadError::Compiler(
                "the plugin's file was not kept for Cranelift".into(),
            ));
        };
        let started = Instant::now();
        let component = self.compile_optimized(file, limits).await?;
        self.link(
            &plugin.source,
            file,
            component,
            Codegen::Cranelift,
            started.elapsed(),
            false,
        )
    }

    /// Winch's code for a file: from the cache, or compiled in a child
    /// process and kept in the cache. Says whether it came from the cache.
    async fn compile_baseline(
        &self,
        baseline: &Baseline,
        file: &PluginFile,
        limits: &LoadLimits,
    ) -> Result<(Component, bool), LoadError> {
        if let Some(cache) = &baseline.cache
            && let Some(component) = cached(cache, &baseline.engine, &file.digest).await
        {
            return Ok((component, true));
        }
        let code = self
            .compiler
            .compile(&file.bytes, limits.compile, None, Codegen::Winch)
            .await?;
        let component = load_and_keep(
            &baseline.engine,
            &baseline.cache,
            &file.digest,
            code,
            Keep::Behind,
        )
        .await?;
        Ok((component, false))
    }

    /// Compiles a file with Cranelift in a child process, with the function
    /// cache, and keeps the code in the cache.
    async fn compile_optimized(
        &self,
        file: &PluginFile,
        limits: &LoadLimits,
    ) -> Result<Component, LoadError> {
        let functions = self.cache.as_ref().map(|c| c.functions_dir());
        let code = self
            .compiler
            .compile(
                &file.bytes,
                limits.compile,
                functions.as_deref(),
                Codegen::Cranelift,
            )
            .await?;
        load_and_keep(&self.engine, &self.cache, &file.digest, code, Keep::Before).await
    }
}

/// The code `cache` keeps for the file of `digest`, loaded into `engine`,
/// off the async runtime's threads.
async fn cached(
    cache: &CompileCache,
    engine: &wasmtime::Engine,
    digest: &str,
) -> Option<Component> {
    let (cache, engine, digest) = (cache.clone(), engine.clone(), digest.to_owned());
    tokio::task::spawn_blocking(move || cache.get(&engine, &digest))
        .await
        .ok()
        .flatten()
}

/// When compiled code is written to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Before the code is handed over: whoever looks next (`check`, a
    /// restart) finds it.
    Before,
    /// Behind, once loaded: Winch's code serves a new version, and writing
    /// its 40 MB (40 to 100 ms) would delay that.
    Behind,
}

/// Loads code the compiler child made into `engine` and keeps it in
/// `cache`. Both block: off the async runtime's threads.
async fn load_and_keep(
    engine: &wasmtime::Engine,
    cache: &Option<CompileCache>,
    digest: &str,
    code: Vec<u8>,
    keep: Keep,
) -> Result<Component, LoadError> {
    let (engine, cache, digest) = (engine.clone(), cache.clone(), digest.to_owned());
    tokio::task::spawn_blocking(move || {
        let component = cache::load_compiled(&engine, &code);
        if component.is_ok()
            && let Some(cache) = cache
        {
            match keep {
                Keep::Before => cache.put(&digest, &code),
                // On the runtime's blocking pool, which a program's
                // runtime waits for as it ends (`invoke` keeps its code).
                Keep::Behind => match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn_blocking(move || cache.put(&digest, &code))),
                    Err(_) => cache.put(&digest, &code),
                },
            }
        }
        component
    })
    .await
    .map_err(|e| LoadError::Compiler(format!("loading compiled code: {e}")))?
    .map_err(|e| LoadError::Compiler(format!("loading compiled code: {e:#}")))
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
    Read(#[source] Arc<crate::files::ReadError>),
    #[error("no built-in handler \"builtin:{name}\" (there are: {known})")]
    UnknownBuiltin { name: String, known: String },
    /// The file, or what compiling it needs, is over a bound.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    TooSlow(String),
    #[error("not a valid WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("does not fit the switchyard:plugin contract: {0}")]
    WrongContract(String),
    #[error("does not fit the switchyard:plugin contract: {0}")]
    Exports(#[source] contract::ExportMismatch),
    /// The compiler itself failed (it could not start, or died).
    #[error("{0}")]
    Compiler(String),
}

/// A compiled plugin, ready to instantiate.
pub struct LoadedPlugin {
    /// The file (or the built-in handler) it was loaded from.
    pub source: PluginRef,
    /// First 16 hex digits of the file's SHA-256: the version that handled a
    /// message, in logs and dead-letter records.
    pub hash: String,
    /// The whole SHA-256, the key of the compiled-code cache.
    pub digest: String,
    pub compile_time: Duration,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
    /// The compiler of its code (none for a built-in handler).
    pub codegen: Option<Codegen>,
    /// The largest initial size of the plugin's linear memories, in bytes:
    /// an instance needs at least this much of its queue's `memory_mib`.
    pub initial_memory: Option<u64>,
    /// The interfaces it imports.
    pub imports: Vec<String>,
    /// The engine its code runs on (Cranelift's or Winch's).
    pub(crate) engine: wasmtime::Engine,
    /// The file, kept while the plugin runs on Winch's code, for the
    /// Cranelift compile that replaces it.
    pub(crate) file: Option<Arc<PluginFile>>,
    /// Keeps its cached code renewed while it runs (see `cache.rs`).
    #[expect(dead_code, reason = "a token, held for its lifetime, never read")]
    pub(crate) held: Option<Arc<cache::Held>>,
    pub(crate) code: Code,
}

/// What runs a plugin's handler.
pub(crate) enum Code {
    /// A component of contract 0.1.0, instantiated in a sandbox for each
    /// call.
    V1(v0_1::PluginPre<HostState>),
    /// A component of contract 0.2.0.
    V2(v0_2::PluginPre<HostState>),
    /// A handler built into the host.
    Builtin(Builtin),
}

/// An instantiated component.
pub(crate) enum Bindings {
    V1(v0_1::Plugin),
    V2(v0_2::Plugin),
}

impl LoadedPlugin {
    /// The compiler of its code, for operators: `cranelift`, `winch` or
    /// `built-in`.
    pub fn compiler(&self) -> &'static str {
        match self.codegen {
            Some(Codegen::Cranelift) => "cranelift",
            Some(Codegen::Winch) => "winch",
            None => "built-in",
        }
    }

    /// Whether it runs on Winch's code, waiting for Cranelift's.
    pub fn is_baseline(&self) -> bool {
        self.codegen == Some(Codegen::Winch)
    }

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
            .field("source", &self.source)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}
