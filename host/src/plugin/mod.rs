//! Running plugins: one wasmtime [`Engine`](wasmtime::Engine) for the host,
//! one pre-instantiated component per plugin, a fresh store and instance
//! per message.
//!
//! A plugin is someone else's code. It gets no ambient authority (WASI is
//! linked to an empty context: no files, environment, arguments or network),
//! a CPU and wall-clock deadline per call (epoch interruption), and a memory
//! cap per instance. A trap, a timeout or a cap hit ends that one call; the
//! host carries on.
//!
//! - [`engine`]: the engine, its linker and epoch ticker;
//! - [`load`]: reading, compiling ([`compile`], [`cache`], and Cranelift's
//!   cache of compiled functions in `functions`) and linking a plugin,
//!   checked against the [`contract`];
//! - [`call`]: one call, its outcome, warm instances;
//! - [`builtin`]: native handlers;
//! - [`host`]: the state of one store; the imports, one module each in
//!   [`imports`].

pub mod bindings;
pub mod builtin;
mod cache;
pub mod call;
pub mod compile;
pub mod contract;
pub mod engine;
mod functions;
mod host;
pub mod imports;
pub mod load;
pub mod output;
pub mod pools;

pub use builtin::{Builtin, NativeHandler, builtin, register_native};
pub use cache::CompileCache;
pub use call::{CallContext, CallResult, Delivery, FailureKind, Outcome, WarmPool};
pub use compile::{CompileLimits, Compiler};
pub use engine::{
    BASELINE_MIN_BYTES, Codegen, EngineKind, POOL_INSTANCES, PluginEngine, engine_config,
};
pub use host::HostState;
pub use imports::mail::smtp;
pub use imports::{http, keyvalue, mail, sql};
pub use load::{LoadError, LoadLimits, LoadedPlugin, PluginFile};

use call::hex;
use load::{Bindings, Code};
