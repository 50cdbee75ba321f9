//! The host: connects to Redis, prepares streams and groups, loads every
//! plugin, runs the router and the queue workers, applies edits of plugin
//! files and queues.toml while running, and drains on shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::metrics::{Metrics, QueueMetrics};
use crate::config::{Config, ConfigChanges, MissingGroup, QueueConfig};
use crate::dispatch::{QueueParts, QueueRuntime, QueueWorker, RuntimeParts, Slots, WorkerTasks};
use crate::plugin::{
    CompileLimits, Compiler, LoadError, LoadLimits, LoadedPlugin, POOL_INSTANCES, PluginEngine,
};
use crate::redis_conn::{self, Health};
use crate::router::Router;
use crate::shutdown::Shutdown;
use crate::stream::bounded::BoundedReader;
use crate::stream::ingress::IngressRouter;
use crate::stream::queue::QueueStream;
use crate::stream::{Keys, ensure_group, retention};
use crate::watch::Watcher;

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
fn files_to_watch(config: &Config) -> BTreeSet<PathBuf> {
    config
        .queues
        .values()
        .map(|q| q.plugin.clone())
        .filter(|p| !crate::plugin::is_builtin(p))
        .chain([config.path.clone()])
        .collect()
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
    PluginEngine::new(config.host.cache_dir.as_deref(), compiler)
}

/// Why a configuration cannot run.
#[derive(Debug, Clone)]
pub enum ConfigRefusal {
    /// The queues ask for more instances than the pool holds.
    Pool { total: u32 },
    /// A plugin file cannot serve the queues that name it.
    Plugin {
        queues: Vec<String>,
        path: PathBuf,
        error: PluginProblem,
    },
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
            ConfigRefusal::Plugin {
                queues,
                path,
                error,
            } => {
                let keys: Vec<String> = queues
                    .iter()
                    .map(|q| format!("queues.{q}.plugin"))
                    .collect();
                write!(f, "{}: {} refused: ", keys.join(", "), path.display())?;
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

/// The plugins in use, by file.
pub type Plugins = BTreeMap<PathBuf, Arc<LoadedPlugin>>;

/// Checks that `plugin` can serve `queue`: its initial memory fits the
/// queue's cap.
fn fits(plugin: &LoadedPlugin, queue: &QueueConfig) -> Result<(), PluginProblem> {
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
fn log_missing_grants(config: &Config, plugins: &Plugins) {
    for q in config.queues.values() {
        if let Some(plugin) = plugins.get(&q.plugin) {
            for warning in missing_grants(plugin, q) {
                tracing::warn!(path = %config.path.display(), plugin = %plugin.hash, "queues.toml: {warning}");
            }
        }
    }
}

/// The queues of `config` that use the plugin file `path`.
fn users<'c>(config: &'c Config, path: &Path) -> Vec<&'c QueueConfig> {
    config
        .queues
        .values()
        .filter(|q| q.plugin == path)
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
    let paths: BTreeSet<&PathBuf> = config.queues.values().map(|q| &q.plugin).collect();
    for path in paths {
        let queues = users(config, path);
        let names: Vec<String> = queues.iter().map(|q| q.name.clone()).collect();
        let old = known.get(path);
        let plugin = match engine
            .load(path, &limits, old.map(|p| p.digest.as_str()))
            .await
        {
            Ok(None) => old.expect("unchanged").clone(),
            Ok(Some(plugin)) => {
                count_load(metrics, &plugin);
                tracing::info!(queues = %names.join(","), plugin = %plugin.hash, contract = plugin.contract(), path = %path.display(), compile_ms = plugin.compile_time.as_millis() as u64, from_cache = plugin.from_cache, "Plugin loaded.");
                Arc::new(plugin)
            }
            Err(e) => {
                refusals.push(ConfigRefusal::Plugin {
                    queues: names,
                    path: path.clone(),
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
                    path: path.clone(),
                    error: problem,
                });
            }
        }
        if ok {
            loaded.insert(path.clone(), plugin);
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
    let pool = (total > POOL_INSTANCES).then_some(ConfigRefusal::Pool { total });
    match load_plugins(engine, config, known, metrics).await {
        Ok(plugins) if pool.is_none() => Ok(plugins),
        Ok(_) => Err(ConfigRefusals(pool.into_iter().collect())),
        Err(ConfigRefusals(mut r)) => {
            r.splice(0..0, pool);
            Err(ConfigRefusals(r))
        }
    }
}

fn count_load(metrics: &Metrics, plugin: &LoadedPlugin) {
    let counter = if plugin.from_cache {
        &metrics.reloads.cache_hits
    } else {
        &metrics.reloads.compiles
    };
    QueueMetrics::add(counter);
}

/// Runs the host until `shutdown.drain` fires, then drains: stops reading,
/// gives in-flight handlers `shutdown_timeout` to finish (or less, if
/// `shutdown.now` fires), and returns. What did not finish stays pending and
/// is delivered again later; nothing unhandled is acknowledged.
pub async fn run(
    config: Config,
    client: redis::Client,
    compiler: Compiler,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> Result<()> {
    for w in &config.warnings {
        tracing::warn!(path = %config.path.display(), "queues.toml: {w}");
    }
    let current = Arc::new(ArcSwap::from_pointee(config.clone()));
    // The admin server answers from the start: /healthz while Redis is
    // still being waited for, /readyz saying what is not ready yet.
    // Stopped when the run ends, however it ends (dropped).
    let _admin = match &config.admin {
        Some(a) => {
            let listener = std::net::TcpListener::bind(a.listen)
                .with_context(|| format!("admin.listen: cannot listen on {}", a.listen))?;
            let scheme = if a.tls.is_some() { "https" } else { "http" };
            tracing::info!(address = %a.listen, scheme, "Admin server listening.");
            let state = Arc::new(crate::admin::server::AdminState::new(
                metrics.clone(),
                current.clone(),
                client.clone(),
            ));
            let tls = a.tls.as_ref().map(|t| t.server.clone());
            let app = crate::admin::server::router(state);
            Some(
                crate::admin::listen::AdminServer::start(
                    listener,
                    tls,
                    app,
                    shutdown.drain.child_token(),
                )
                .context("starting the admin server")?,
            )
        }
        None => None,
    };
    // Watch before loading, so a file replaced while the host starts is
    // still noticed (a change to what was just loaded is a no-op).
    let mut watcher = match Watcher::new() {
        Ok(mut w) => {
            w.watch(files_to_watch(&config));
            Some(w)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Cannot watch files; plugins and queues.toml will not be reloaded.");
            None
        }
    };
    let Some(mut conn) = redis_conn::connect_patiently(&client, &shutdown.drain).await? else {
        return Ok(());
    };
    ensure_group(&mut conn, &config.ingress.stream, &config.host.prefix).await?;
    let engine = engine(&config, compiler)?;
    let none = Plugins::new();
    let plugins = tokio::select! {
        _ = shutdown.drain.cancelled() => return Ok(()),
        p = prepare(&engine, &config, &none, &metrics) => p?,
    };
    log_missing_grants(&config, &plugins);
    let consumer = consumer_name();
    tracing::info!(
        redis = %redis_conn::describe(&client),
        ingress = %config.ingress.stream,
        prefix = %config.host.prefix,
        consumer = %consumer,
        queues = config.queues.len(),
        "Switchyard started."
    );

    let mut host = Supervisor {
        router: Arc::new(ArcSwap::from_pointee(Router::new(&config))),
        on_missing_group: Arc::new(ArcSwap::from_pointee(config.host.on_missing_group)),
        current,
        keys: Keys::new(&config.host.prefix),
        client,
        conn,
        engine,
        consumer,
        metrics,
        pools: Default::default(),
        health: Arc::new(Health::default()),
        plugins,
        queues: BTreeMap::new(),
        readers: CancellationToken::new(),
        loops: TaskTracker::new(),
        retired: Vec::new(),
        config,
    };
    host.start_router();
    host.start_maintenance();
    for queue in host.config.queues.clone().into_values() {
        host.start_queue(queue).await?;
    }

    loop {
        let changed = async {
            match &mut watcher {
                Some(w) => w.changes().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.drain.cancelled() => break,
            changed = changed => {
                                // A reload (and the compile in it) gives way to shutdown.
                let attempted = tokio::select! {
                    _ = shutdown.drain.cancelled() => break,
                    attempted = host.apply(&changed) => attempted,
                };
                // The files of an edit that was refused are watched too: a
                // plugin it names may be built after it was saved.
                if let Some(w) = &mut watcher {
                    let mut files = files_to_watch(&host.config);
                    files.extend(attempted);
                    w.watch(files);
                }
            }
        }
    }
    host.drain(&shutdown.now).await;
    Ok(())
}

/// The running host's parts, and what it is running now.
struct Supervisor {
    config: Config,
    /// The configuration the maintenance task reads.
    current: Arc<ArcSwap<Config>>,
    keys: Keys,
    client: redis::Client,
    conn: ConnectionManager,
    engine: PluginEngine,
    consumer: String,
    metrics: Arc<Metrics>,
    /// Database pools and mail relays of the queues.
    pools: Arc<crate::plugin::pools::Pools>,
    /// Whether Redis answers, for logging outages once.
    health: Arc<Health>,
    router: Arc<ArcSwap<Router>>,
    on_missing_group: Arc<ArcSwap<MissingGroup>>,
    /// The plugins in use, by file.
    plugins: Plugins,
    queues: BTreeMap<String, QueueHandle>,
    /// Stops every reading loop (and the maintenance task) at shutdown.
    readers: CancellationToken,
    /// The router's and the queues' reading loops, and maintenance.
    loops: TaskTracker,
    /// The tasks of removed queues, winding down.
    retired: Vec<WorkerTasks>,
}

/// A running queue.
struct QueueHandle {
    runtime: Arc<ArcSwap<QueueRuntime>>,
    slots: Arc<Slots>,
    /// Stops this queue's reading loop alone (the queue was removed).
    stop: CancellationToken,
    /// Its handler calls and the tasks that serve them.
    tasks: WorkerTasks,
}

impl Supervisor {
    /// What every runtime of queue `name` is made with.
    fn runtime_parts(&self, name: &str) -> RuntimeParts {
        RuntimeParts {
            on_missing_group: self.config.host.on_missing_group,
            conn: self.conn.clone(),
            prefix: self.config.host.prefix.clone(),
            max_publish_bytes: self.config.ingress.max_entry_bytes,
            metrics: self.metrics.queue(name),
            pools: self.pools.clone(),
        }
    }

    fn start_router(&self) {
        let router = IngressRouter {
            conn: self.conn.clone(),
            reader: BoundedReader::new(&self.client),
            keys: self.keys.clone(),
            consumer: self.consumer.clone(),
            router: self.router.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            on_missing_group: self.on_missing_group.clone(),
            group_reported: false,
        };
        self.loops.spawn(router.run(self.readers.clone()));
    }

    /// Keeps the streams bounded and the groups free of dead consumers (see
    /// [`crate::stream::retention`]), every `retention.interval`, on a task
    /// of its own.
    fn start_maintenance(&self) {
        let (current, keys, consumer) = (
            self.current.clone(),
            self.keys.clone(),
            self.consumer.clone(),
        );
        let (mut conn, health, stop) =
            (self.conn.clone(), self.health.clone(), self.readers.clone());
        let metrics = self.metrics.clone();
        self.loops.spawn(async move {
            loop {
                let interval = current.load().retention.interval;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let config = current.load_full();
                let trimmed = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = maintain(&mut conn, &config, &keys, &consumer) => r,
                };
                match trimmed {
                    Ok(()) => {
                        health.ok();
                        QueueMetrics::add(&metrics.retention_rounds);
                    }
                    Err(e) => health.failed(&e),
                }
            }
        });
    }

    async fn start_queue(&mut self, queue: QueueConfig) -> Result<()> {
        let mut conn = self.conn.clone();
        ensure_group(
            &mut conn,
            &self.keys.queue_stream(&queue.name),
            self.keys.group(),
        )
        .await?;
        let name = queue.name.clone();
        let plugin = self.plugins[&queue.plugin].clone();
        let slots = Arc::new(Slots::new(queue.concurrency_min as usize));
        self.metrics
            .queue(&name)
            .concurrency
            .store(queue.concurrency_min as u64, Ordering::Relaxed);
        let runtime = Arc::new(ArcSwap::from_pointee(QueueRuntime::new(
            queue,
            plugin,
            &self.runtime_parts(&name),
        )));
        let stop = self.readers.child_token();
        let tasks = WorkerTasks::default();
        let worker = QueueWorker::new(QueueParts {
            runtime: runtime.clone(),
            slots: slots.clone(),
            engine: self.engine.clone(),
            stream: QueueStream::new(
                self.conn.clone(),
                &self.keys,
                &name,
                &self.consumer,
                &self.config.ingress.stream,
            ),
            reader: BoundedReader::new(&self.client),
            metrics: self.metrics.queue(&name),
            health: self.health.clone(),
        });
        self.loops.spawn(worker.run(stop.clone(), tasks.clone()));
        self.loops.spawn(crate::dispatch::scale(
            runtime.clone(),
            slots.clone(),
            self.metrics.queue(&name),
            stop.clone(),
        ));
        self.queues.insert(
            name,
            QueueHandle {
                runtime,
                slots,
                stop,
                tasks,
            },
        );
        Ok(())
    }

    /// Applies a batch of changed files. Returns the plugin files of a
    /// queues.toml edit that was refused, to keep watching them.
    async fn apply(&mut self, changed: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
        // A changed file the running configuration does not use belongs to
        // an edit that was refused: try that edit again.
        let retry = changed
            .iter()
            .any(|p| !self.plugins.contains_key(p) && *p != self.config.path);
        if changed.contains(&self.config.path) || retry {
            // A config reload also picks up every changed plugin file.
            return self.reload_config().await;
        }
        let paths: Vec<PathBuf> = self
            .plugins
            .keys()
            .filter(|p| changed.contains(*p))
            .cloned()
            .collect();
        for path in paths {
            self.reload_plugin(&path).await;
        }
        BTreeSet::new()
    }

    async fn reload_plugin(&mut self, path: &Path) {
        let current = self.plugins[path].clone();
        let limits = load_limits(&self.config);
        let using: Vec<String> = users(&self.config, path)
            .iter()
            .map(|q| q.name.clone())
            .collect();
        let refuse = |metrics: &Metrics, reason: &dyn fmt::Display| {
            QueueMetrics::add(&metrics.reloads.plugin_refused);
            for q in &using {
                metrics.queue(q).refused(&reason.to_string());
            }
            tracing::warn!(path = %path.display(), reason = %reason, kept = %current.hash, "Plugin file refused; the running version keeps serving.");
        };
        let plugin = match self.engine.load(path, &limits, Some(&current.digest)).await {
            Ok(None) => return,
            Ok(Some(plugin)) => plugin,
            Err(e) => return refuse(&self.metrics, &e),
        };
        count_load(&self.metrics, &plugin);
        for q in users(&self.config, path) {
            for warning in missing_grants(&plugin, q) {
                tracing::warn!(path = %path.display(), plugin = %plugin.hash, "queues.toml: {warning}");
            }
            if let Err(problem) = fits(&plugin, q) {
                let refusal = ConfigRefusal::Plugin {
                    queues: vec![q.name.clone()],
                    path: path.to_owned(),
                    error: problem,
                };
                return refuse(&self.metrics, &refusal);
            }
        }
        let plugin = Arc::new(plugin);
        let mut swapped = Vec::new();
        let parts = |name: &str| self.runtime_parts(name);
        for (name, q) in &self.queues {
            let rt = q.runtime.load();
            if rt.plugin.path == path {
                let queue = (*rt.queue).clone();
                q.runtime.store(Arc::new(QueueRuntime::new(
                    queue,
                    plugin.clone(),
                    &parts(name),
                )));
                swapped.push(name.clone());
            }
        }
        QueueMetrics::add(&self.metrics.reloads.plugin_swaps);
        tracing::info!(path = %path.display(), old = %current.hash, new = %plugin.hash, queues = %swapped.join(","), compile_ms = plugin.compile_time.as_millis() as u64, from_cache = plugin.from_cache, "Plugin swapped; the next messages run on the new version.");
        self.plugins.insert(path.to_owned(), plugin);
    }

    async fn reload_config(&mut self) -> BTreeSet<PathBuf> {
        let path = self.config.path.clone();
        let refuse = |metrics: &Metrics, count: usize| {
            QueueMetrics::add(&metrics.reloads.config_refused);
            tracing::warn!(path = %path.display(), errors = count, "queues.toml edit refused; the running configuration stays.");
        };
        let mut new = match Config::load(&path) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.errors {
                    tracing::warn!(path = %path.display(), "queues.toml error: {e}");
                }
                refuse(&self.metrics, errors.errors.len());
                return errors.plugins;
            }
        };
        for w in &new.warnings {
            tracing::warn!(path = %path.display(), "queues.toml: {w}");
        }
        let changes = ConfigChanges::between(&self.config, &new);
        // Every key name and the compiled-code cache are fixed for the life
        // of the process.
        new.host.prefix = self.config.host.prefix.clone();
        new.host.cache_dir = self.config.host.cache_dir.clone();
        new.ingress.stream = self.config.ingress.stream.clone();
        let plugins = match prepare(&self.engine, &new, &self.plugins, &self.metrics).await {
            Ok(p) => p,
            Err(refusals) => {
                for r in &refusals.0 {
                    tracing::warn!(path = %path.display(), "queues.toml error: {r}");
                }
                refuse(&self.metrics, refusals.0.len());
                return files_to_watch(&new);
            }
        };
        log_missing_grants(&new, &plugins);

        // Apply: the queues first, so no message is routed to a queue that
        // is not started yet.
        let removed: Vec<String> = self
            .queues
            .keys()
            .filter(|q| !new.queues.contains_key(*q))
            .cloned()
            .collect();
        self.plugins = plugins;
        self.config.host.on_missing_group = new.host.on_missing_group;
        for queue in new.queues.values() {
            let plugin = self.plugins[&queue.plugin].clone();
            match self.queues.get(&queue.name) {
                Some(handle) => {
                    handle.runtime.store(Arc::new(QueueRuntime::new(
                        queue.clone(),
                        plugin,
                        &RuntimeParts {
                            on_missing_group: new.host.on_missing_group,
                            max_publish_bytes: new.ingress.max_entry_bytes,
                            ..self.runtime_parts(&queue.name)
                        },
                    )));
                    // A fixed size is taken as it is; a scaled queue keeps
                    // its size within the new bounds.
                    let size = handle
                        .slots
                        .size()
                        .clamp(queue.concurrency_min as usize, queue.concurrency as usize);
                    handle.slots.resize(size);
                    self.metrics
                        .queue(&queue.name)
                        .concurrency
                        .store(size as u64, Ordering::Relaxed);
                }
                None => {
                    if let Err(e) = self.start_queue(queue.clone()).await {
                        tracing::error!(queue = %queue.name, error = %format!("{e:#}"), "Could not start a new queue; it is retried at the next edit.");
                        continue;
                    }
                    tracing::info!(queue = %queue.name, "Queue added.");
                }
            }
        }
        self.router.store(Arc::new(Router::new(&new)));
        self.on_missing_group
            .store(Arc::new(new.host.on_missing_group));
        for name in removed {
            if let Some(handle) = self.queues.remove(&name) {
                handle.stop.cancel();
                // Its acks and lease renewals stop once its last handler is
                // done. Its unread messages stay in its stream.
                let tasks = handle.tasks.clone();
                tokio::spawn(async move { tasks.wind_down().await });
                self.retired.push(handle.tasks);
                tracing::info!(queue = %name, "Queue removed: it stops reading; messages in flight finish; messages never read stay in its stream.");
            }
        }
        self.current.store(Arc::new(new.clone()));
        self.config = new;
        QueueMetrics::add(&self.metrics.reloads.config_applied);
        for change in &changes.applied {
            tracing::info!(path = %path.display(), "queues.toml: applied {change}");
        }
        for change in &changes.at_restart {
            tracing::warn!(path = %path.display(), "queues.toml: {change} takes effect at the next restart");
        }
        let keys: Vec<&str> = changes
            .applied
            .iter()
            .chain(&changes.at_restart)
            .filter_map(|c| c.split(':').next())
            .collect();
        tracing::info!(path = %path.display(), queues = self.queues.len(), applied = changes.applied.len(), at_restart = changes.at_restart.len(), changed = %keys.join(","), "queues.toml applied.");
        BTreeSet::new()
    }

    /// Stops reading, waits for the handlers within the shutdown timeout
    /// (or until `now` fires), lets the last acks go out, and returns.
    async fn drain(self, now: &CancellationToken) {
        let timeout = self.config.host.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        self.readers.cancel();
        // Readers finish the read they are in, and the router routes what it
        // read (within the deadline: a route script already sent runs
        // whole or not at all in Redis, so abandoning the wait loses
        // nothing).
        self.loops.close();
        tokio::select! {
            _ = self.loops.wait() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = now.cancelled() => {}
        }
        let all: Vec<&WorkerTasks> = self
            .queues
            .values()
            .map(|q| &q.tasks)
            .chain(&self.retired)
            .collect();
        for t in &all {
            t.handlers.close();
        }
        let in_flight = |all: &[&WorkerTasks]| all.iter().map(|t| t.handlers.len()).sum::<usize>();
        if in_flight(&all) > 0 {
            tracing::info!(
                in_flight = in_flight(&all),
                ?timeout,
                "Waiting for in-flight handlers."
            );
        }
        let handlers = async {
            for t in &all {
                t.handlers.wait().await;
            }
        };
        let finished = tokio::select! {
            _ = handlers => true,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    unfinished = in_flight(&all),
                    "Shutdown timeout reached; unfinished messages stay pending and will be delivered again."
                );
                false
            }
            _ = now.cancelled() => false,
        };
        // Every finished handler has seen its ack go out; stop the lease
        // renewals. The ack tasks end with the last handler. With handlers
        // left unfinished there is nothing more to wait for.
        for t in &all {
            t.bookkeeping_done.cancel();
            t.bookkeeping.close();
        }
        if !finished {
            tracing::info!("Switchyard stopped.");
            return;
        }
        let bookkeeping = async {
            for t in &all {
                t.bookkeeping.wait().await;
            }
        };
        tokio::select! {
            _ = bookkeeping => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                tracing::warn!(
                    tasks = all.iter().map(|t| t.bookkeeping.len()).sum::<usize>(),
                    "Acks and lease renewals did not stop within 2 s; exiting anyway."
                );
            }
            _ = now.cancelled() => {}
        }
        tracing::info!("Switchyard stopped.");
    }
}

/// One round of retention: trims the streams and removes consumers of
/// processes that are gone.
async fn maintain(
    conn: &mut ConnectionManager,
    config: &Config,
    keys: &Keys,
    consumer: &str,
) -> crate::redis_conn::StreamResult<()> {
    let r = &config.retention;
    let mut streams = vec![config.ingress.stream.clone()];
    streams.extend(config.queues.keys().map(|q| keys.queue_stream(q)));
    for stream in &streams {
        let trimmed = retention::trim_handled(conn, stream, r.keep_handled).await?;
        if trimmed > 0 {
            tracing::debug!(stream = %stream, trimmed, "Trimmed handled entries.");
        }
        let removed =
            retention::remove_idle_consumers(conn, stream, keys.group(), r.idle_consumer, consumer)
                .await?;
        if !removed.is_empty() {
            tracing::info!(stream = %stream, consumers = %removed.join(","), "Removed consumers idle with nothing pending.");
        }
    }
    let dead = keys.dead_letter();
    let trimmed = retention::trim_dead_letters(conn, &dead, r).await?;
    if trimmed > 0 {
        tracing::info!(stream = %dead, trimmed, "Trimmed dead letters past their retention.");
    }
    Ok(())
}

/// A host running on a task of its own: for the demo and the tests.
#[derive(Debug)]
pub struct RunningHost {
    pub metrics: Arc<Metrics>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningHost {
    /// Starts a host; plugins are compiled by `compiler`.
    pub fn start(config: Config, client: redis::Client, compiler: Compiler) -> Self {
        let metrics = Arc::new(Metrics::default());
        let shutdown = Shutdown::new();
        let task = tokio::spawn(run(
            config,
            client,
            compiler,
            shutdown.clone(),
            metrics.clone(),
        ));
        RunningHost {
            metrics,
            shutdown,
            task,
        }
    }

    /// True once the host has stopped (an error at start, or after `stop`).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the host and waits for it to drain.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.drain.cancel();
        self.task.await.context("host task panicked")?
    }
}
