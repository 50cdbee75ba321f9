//! What a configuration needs before it runs, checked the same way by
//! `switchyard check`, the start and every reload: the instance pool fits
//! it, every plugin loads and fits its queues; and what a plugin imports
//! that its queue does not grant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;

use crate::config::{Config, ConfigError, PluginRef, QueueConfig};
use crate::metrics::Metrics;
use crate::plugin::{
    CompileLimits, Compiler, LoadError, LoadLimits, LoadedPlugin, POOL_INSTANCES, PluginEngine,
};

/// A name for this process's consumers, unique among every process that
/// shares the Redis: host name, pid, start time, and a counter for hosts that
/// share a process (tests).
pub fn consumer_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!(
        "{host}-{}-{started}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The files whose changes matter: queues.toml and every plugin file it
/// names (built-in handlers have none).
pub(super) fn files_to_watch(config: &Config) -> BTreeSet<PathBuf> {
    let mut files = config.plugin_files();
    files.insert(config.path.clone());
    files
}

/// The limits plugin files are loaded under.
pub fn load_limits(config: &Config) -> LoadLimits {
    LoadLimits {
        max_bytes: config.host.max_plugin_bytes,
        compile: CompileLimits {
            cpu: config.host.plugin_compile_timeout,
            memory_mib: config.host.plugin_compile_memory_mib,
        },
    }
}

/// The engine for `config`, compiling with `compiler`, with its
/// compiled-code cache.
pub fn engine(config: &Config, compiler: Compiler) -> Result<PluginEngine> {
    // A large plugin's new version is served on Winch's code while
    // Cranelift compiles it (the host), and checked or run on it (`check`,
    // `invoke`): what the host would accept, as fast as the host would.
    PluginEngine::new(config.host.cache_dir.as_deref(), compiler)?
        .with_baseline(crate::plugin::BASELINE_MIN_BYTES)
}

/// Why a configuration cannot run.
#[derive(Debug, Clone)]
pub enum ConfigRefusal {
    /// The queues ask for more instances than the pool holds.
    Pool { total: u32 },
    /// A plugin cannot serve the queues that name it.
    Plugin {
        queues: Vec<String>,
        source: PluginRef,
        error: PluginProblem,
    },
    /// A setting that reads, but that its layer refuses (the admin
    /// server's certificate and key that make no TLS configuration).
    Setting(ConfigError),
}

/// What is wrong with a plugin for its queues.
#[derive(Debug, Clone)]
pub enum PluginProblem {
    Load(LoadError),
    /// Its initial memory does not fit the queue's cap.
    Memory {
        initial: u64,
        memory_mib: u32,
    },
}

impl fmt::Display for ConfigRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigRefusal::Pool { total } => write!(
                f,
                "the queues' concurrency adds up to {total}, more than the {POOL_INSTANCES} plugin instances the host can run at once"
            ),
            ConfigRefusal::Setting(e) => write!(f, "{e}"),
            ConfigRefusal::Plugin {
                queues,
                source,
                error,
            } => {
                let keys: Vec<String> = queues
                    .iter()
                    .map(|q| format!("queues.{q}.plugin"))
                    .collect();
                write!(f, "{}: {source} refused: ", keys.join(", "))?;
                match error {
                    PluginProblem::Load(e) => write!(f, "{e}"),
                    PluginProblem::Memory {
                        initial,
                        memory_mib,
                    } => write!(
                        f,
                        "its initial memory is {} MiB, more than queues.{}.memory_mib ({memory_mib} MiB)",
                        initial.div_ceil(1024 * 1024),
                        queues.first().map_or("?", String::as_str)
                    ),
                }
            }
        }
    }
}

/// Every reason a configuration was refused, one per line.
#[derive(Debug, Clone)]
pub struct ConfigRefusals(pub Vec<ConfigRefusal>);

impl fmt::Display for ConfigRefusals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigRefusals {}

impl std::error::Error for ConfigRefusal {
    /// The plugin's load error, or the setting's.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigRefusal::Plugin {
                error: PluginProblem::Load(e),
                ..
            } => Some(e),
            ConfigRefusal::Setting(e) => Some(e),
            _ => None,
        }
    }
}

/// The plugins in use, by file.
pub type Plugins = BTreeMap<PluginRef, Arc<LoadedPlugin>>;

/// Checks that `plugin` can serve `queue`: its initial memory fits the
/// queue's cap.
pub fn fits(plugin: &LoadedPlugin, queue: &QueueConfig) -> Result<(), PluginProblem> {
    match plugin.initial_memory {
        Some(initial) if initial > u64::from(queue.memory_mib) * 1024 * 1024 => {
            Err(PluginProblem::Memory {
                initial,
                memory_mib: queue.memory_mib,
            })
        }
        _ => Ok(()),
    }
}

/// What `plugin` imports that `queue` does not grant, as warnings: every
/// call of those imports would be refused at run time.
pub fn missing_grants(plugin: &LoadedPlugin, queue: &QueueConfig) -> Vec<String> {
    use crate::plugin::contract::Capability;
    let mut seen = Vec::new();
    for import in &plugin.imports {
        let Some(capability) = Capability::of(import) else {
            continue;
        };
        let granted = match capability {
            Capability::Http => !queue.http.grant.allowed.is_empty(),
            Capability::KeyValue => queue.keyvalue.is_some(),
            Capability::Publish => !queue.publish.types.is_empty(),
            Capability::Sql => queue.sql.is_some(),
            Capability::Mail => queue.mail.is_some(),
        };
        if !granted && !seen.iter().any(|(c, _)| *c == capability) {
            seen.push((capability, import.clone()));
        }
    }
    seen.into_iter()
        .map(|(capability, import)| {
            format!(
                "queues.{}: its plugin imports {import}, but the queue has no {}: every such call will be refused",
                queue.name,
                capability.grant()
            )
        })
        .collect()
}

/// Logs what the queues' plugins import without a grant.
pub(super) fn log_missing_grants(config: &Config, plugins: &Plugins) {
    for q in config.queues.values() {
        if let Some(plugin) = plugins.get(&q.plugin) {
            for warning in missing_grants(plugin, q) {
                tracing::warn!(path = %config.path.display(), plugin = %plugin.hash, "queues.toml: {warning}");
            }
        }
    }
}

/// The queues of `config` that use `plugin`.
pub(super) fn users<'c>(config: &'c Config, plugin: &PluginRef) -> Vec<&'c QueueConfig> {
    config
        .queues
        .values()
        .filter(|q| q.plugin == *plugin)
        .collect()
}

/// Loads every plugin named in `config`, each file once, one at a time.
/// A file whose content is that of a plugin in `known` (same path) is reused
/// without compiling. Returns every refusal, each naming its queues.
/// `switchyard check`, the start and every reload use this.
pub async fn load_plugins(
    engine: &PluginEngine,
    config: &Config,
    known: &Plugins,
    metrics: &Metrics,
) -> Result<Plugins, ConfigRefusals> {
    let limits = load_limits(config);
    let mut loaded = BTreeMap::new();
    let mut refusals = Vec::new();
    let sources: BTreeSet<&PluginRef> = config.queues.values().map(|q| &q.plugin).collect();
    for source in sources {
        let queues = users(config, source);
        let names: Vec<String> = queues.iter().map(|q| q.name.clone()).collect();
        let old = known.get(source);
        let plugin = match engine
            .load(source, &limits, old.map(|p| p.digest.as_str()))
            .await
        {
            Ok(None) => old.expect("unchanged").clone(),
            Ok(Some(plugin)) => {
                count_load(metrics, &plugin);
                tracing::info!(event = "plugin_loaded", queues = %names.join(","), plugin = %plugin.hash, contract = plugin.contract(), path = %source, compile_ms = plugin.compile_time.as_millis() as u64, from_cache = plugin.from_cache, compiler = plugin.compiler(), "Plugin loaded.");
                Arc::new(plugin)
            }
            Err(e) => {
                refusals.push(ConfigRefusal::Plugin {
                    queues: names,
                    source: source.clone(),
                    error: PluginProblem::Load(e),
                });
                continue;
            }
        };
        let mut ok = true;
        for q in queues {
            if let Err(problem) = fits(&plugin, q) {
                ok = false;
                refusals.push(ConfigRefusal::Plugin {
                    queues: vec![q.name.clone()],
                    source: source.clone(),
                    error: problem,
                });
            }
        }
        if ok {
            loaded.insert(source.clone(), plugin);
        }
    }
    if refusals.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigRefusals(refusals))
    }
}

/// Everything a configuration needs before it can run: the instance pool
/// fits it and every plugin loads and fits its queues. `switchyard check`,
/// the start and every reload of queues.toml go through here, so a file
/// `check` accepts is a file the running host accepts.
pub async fn prepare(
    engine: &PluginEngine,
    config: &Config,
    known: &Plugins,
    metrics: &Metrics,
) -> Result<Plugins, ConfigRefusals> {
    let total: u32 = config.queues.values().map(|q| q.concurrency).sum();
    let mut refusals: Vec<ConfigRefusal> = (total > POOL_INSTANCES)
        .then_some(ConfigRefusal::Pool { total })
        .into_iter()
        .collect();
    refusals.extend(tls_refusals(config));
    match load_plugins(engine, config, known, metrics).await {
        Ok(plugins) if refusals.is_empty() => Ok(plugins),
        Ok(_) => Err(ConfigRefusals(refusals)),
        Err(ConfigRefusals(r)) => {
            refusals.extend(r);
            Err(ConfigRefusals(refusals))
        }
    }
}

/// What the layers above the model refuse of a configuration's settings,
/// before any plugin is loaded: today the admin server's certificate and
/// key, when they make no TLS configuration.
pub fn check_settings(config: &Config) -> Result<(), ConfigRefusals> {
    let refusals: Vec<ConfigRefusal> = tls_refusals(config).into_iter().collect();
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(ConfigRefusals(refusals))
    }
}

/// The admin server's certificate and key, if they make no TLS
/// configuration (the key not the certificate's, no certificate...).
fn tls_refusals(config: &Config) -> Option<ConfigRefusal> {
    let tls = config.admin.as_ref()?.tls.as_ref()?;
    let (key, path, e) = match crate::tls::server_config(&tls.cert_pem, &tls.key_pem) {
        Ok(_) => return None,
        Err(crate::tls::ServerTlsError::Cert(e)) => ("admin.tls_cert", &tls.cert, e),
        Err(crate::tls::ServerTlsError::Key(e)) => ("admin.tls_key", &tls.key, e),
    };
    Some(ConfigRefusal::Setting(
        config.error(key, format!("{}: {e}", path.display())),
    ))
}

pub(super) fn count_load(metrics: &Metrics, plugin: &LoadedPlugin) {
    crate::events::plugin_loaded(metrics, plugin.from_cache);
}
