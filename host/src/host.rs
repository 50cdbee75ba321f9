//! The host: connects to Redis, prepares streams and groups, loads every
//! plugin, runs the router and the queue workers, applies edits of plugin
//! files and queues.toml while running, and drains on shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::metrics::{Metrics, QueueMetrics};
use crate::config::{Config, QueueConfig};
use crate::dispatch::{QueueParts, QueueRuntime, QueueWorker, Slots};
use crate::plugin::{LoadLimits, LoadedPlugin, POOL_INSTANCES, PluginEngine};
use crate::redis_conn::{self, Health, Reader};
use crate::router::Router;
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
        compile_timeout: config.host.plugin_compile_timeout,
    }
}

/// The engine for `config`, with its compiled-code cache.
pub fn engine(config: &Config) -> Result<PluginEngine> {
    PluginEngine::new(config.host.cache_dir.as_deref())
}

/// Loads every plugin named in `config`, each file once, off the async
/// runtime. A file whose content is that of a plugin in `known` (same path)
/// is reused without compiling. Fails with every refusal listed, each naming
/// its queue. `switchyard check`, the start and every reload use this.
pub async fn load_plugins(
    engine: &PluginEngine,
    config: &Config,
    known: &BTreeMap<PathBuf, Arc<LoadedPlugin>>,
    metrics: &Metrics,
) -> Result<BTreeMap<PathBuf, Arc<LoadedPlugin>>> {
    let limits = load_limits(config);
    let mut loaded = BTreeMap::new();
    let mut errors = Vec::new();
    for queue in config.queues.values() {
        if loaded.contains_key(&queue.plugin) {
            continue;
        }
        let old = known.get(&queue.plugin);
        match engine
            .load(&queue.plugin, &limits, old.map(|p| p.digest.as_str()))
            .await
        {
            Ok(None) => {
                loaded.insert(queue.plugin.clone(), old.expect("unchanged").clone());
            }
            Ok(Some(plugin)) => {
                count_load(metrics, &plugin);
                tracing::info!(queue = %queue.name, plugin = %plugin.hash, path = %queue.plugin.display(), compile_ms = plugin.compile_time.as_millis() as u64, from_cache = plugin.from_cache, "Plugin loaded.");
                loaded.insert(queue.plugin.clone(), Arc::new(plugin));
            }
            Err(e) => errors.push(format!(
                "queues.{}.plugin: {} refused: {e}",
                queue.name,
                queue.plugin.display()
            )),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(loaded)
}

/// Everything a configuration needs before it can run: the instance pool
/// fits it and every plugin loads. `switchyard check`, the start and every
/// reload of queues.toml go through here, so a file `check` accepts is a
/// file the running host accepts.
pub async fn prepare(
    engine: &PluginEngine,
    config: &Config,
    known: &BTreeMap<PathBuf, Arc<LoadedPlugin>>,
    metrics: &Metrics,
) -> Result<BTreeMap<PathBuf, Arc<LoadedPlugin>>> {
    check_pool(config)?;
    load_plugins(engine, config, known, metrics).await
}

fn count_load(metrics: &Metrics, plugin: &LoadedPlugin) {
    let counter = if plugin.from_cache {
        &metrics.reloads.cache_hits
    } else {
        &metrics.reloads.compiles
    };
    QueueMetrics::add(counter);
}

fn check_pool(config: &Config) -> Result<()> {
    let total: u32 = config.queues.values().map(|q| q.concurrency).sum();
    if total > POOL_INSTANCES {
        bail!(
            "the queues' concurrency adds up to {total}, more than the {POOL_INSTANCES} plugin instances the host can run at once"
        );
    }
    Ok(())
}

/// Runs the host until `shutdown` fires, then drains: stops reading, gives
/// in-flight handlers `shutdown_timeout` to finish, and returns. What did not
/// finish stays pending and is delivered again later; nothing unhandled is
/// acknowledged.
pub async fn run(
    config: Config,
    client: redis::Client,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<()> {
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
    let keys = Keys::new(&config.host.prefix);
    let mut conn = redis_conn::shared(&client).await?;
    ensure_group(&mut conn, &config.ingress.stream, keys.group()).await?;
    let engine = engine(&config)?;
    let plugins = prepare(&engine, &config, &BTreeMap::new(), &metrics).await?;
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
        keys,
        client,
        conn,
        engine,
        consumer,
        metrics,
        health: Arc::new(Health::default()),
        plugins,
        queues: BTreeMap::new(),
        readers: CancellationToken::new(),
        loops: TaskTracker::new(),
        handlers: TaskTracker::new(),
        config,
    };
    host.start_router();
    for queue in host.config.queues.clone().into_values() {
        host.start_queue(queue).await?;
    }

    let mut maintenance = tokio::time::interval(host.config.retention.interval);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed = async {
            match &mut watcher {
                Some(w) => w.changes().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = maintenance.tick() => host.maintain().await,
            changed = changed => {
                host.apply(&changed).await;
                if let Some(w) = &mut watcher {
                    w.watch(files_to_watch(&host.config));
                }
            }
        }
    }
    host.drain().await;
    Ok(())
}

/// The running host's parts, and what it is running now.
struct Supervisor {
    config: Config,
    keys: Keys,
    client: redis::Client,
    conn: ConnectionManager,
    engine: PluginEngine,
    consumer: String,
    metrics: Arc<Metrics>,
    /// Whether Redis answers, for logging outages once.
    health: Arc<Health>,
    router: Arc<ArcSwap<Router>>,
    /// The plugins in use, by file.
    plugins: BTreeMap<PathBuf, Arc<LoadedPlugin>>,
    queues: BTreeMap<String, QueueHandle>,
    /// Stops every reading loop at shutdown.
    readers: CancellationToken,
    /// The router's and the queues' reading loops.
    loops: TaskTracker,
    /// Every handler call in flight.
    handlers: TaskTracker,
}

/// A running queue.
struct QueueHandle {
    runtime: Arc<ArcSwap<QueueRuntime>>,
    slots: Arc<Slots>,
    /// Stops this queue's reading loop alone (the queue was removed).
    stop: CancellationToken,
}

impl Supervisor {
    fn start_router(&self) {
        let router = IngressRouter {
            conn: self.conn.clone(),
            reader: Reader::new(self.client.clone()),
            keys: self.keys.clone(),
            stream: self.config.ingress.stream.clone(),
            consumer: self.consumer.clone(),
            batch: self.config.ingress.batch,
            visibility_timeout: self.config.ingress.visibility_timeout,
            router: self.router.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
            on_missing_group: self.config.host.on_missing_group,
        };
        self.loops.spawn(router.run(self.readers.clone()));
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
        let slots = Arc::new(Slots::new(queue.concurrency as usize));
        let runtime = Arc::new(ArcSwap::from_pointee(QueueRuntime::new(queue, plugin)));
        let stop = self.readers.child_token();
        let worker = QueueWorker::new(QueueParts {
            runtime: runtime.clone(),
            slots: slots.clone(),
            engine: self.engine.clone(),
            stream: QueueStream::new(self.conn.clone(), &self.keys, &name, &self.consumer),
            reader: Reader::new(self.client.clone()),
            metrics: self.metrics.queue(&name),
            health: self.health.clone(),
            on_missing_group: self.config.host.on_missing_group,
        });
        self.loops
            .spawn(worker.run(stop.clone(), self.handlers.clone()));
        self.queues.insert(
            name,
            QueueHandle {
                runtime,
                slots,
                stop,
            },
        );
        Ok(())
    }

    /// Applies a batch of changed files.
    async fn apply(&mut self, changed: &BTreeSet<PathBuf>) {
        if changed.contains(&self.config.path) {
            // A config reload also picks up every changed plugin file.
            self.reload_config().await;
            return;
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
    }

    async fn reload_plugin(&mut self, path: &Path) {
        let current = self.plugins[path].clone();
        let limits = load_limits(&self.config);
        match self.engine.load(path, &limits, Some(&current.digest)).await {
            Ok(None) => {}
            Ok(Some(plugin)) => {
                count_load(&self.metrics, &plugin);
                let plugin = Arc::new(plugin);
                let mut swapped = Vec::new();
                for (name, q) in &self.queues {
                    let rt = q.runtime.load();
                    if rt.plugin.path == path {
                        let queue = (*rt.queue).clone();
                        q.runtime
                            .store(Arc::new(QueueRuntime::new(queue, plugin.clone())));
                        swapped.push(name.clone());
                    }
                }
                QueueMetrics::add(&self.metrics.reloads.plugin_swaps);
                tracing::info!(path = %path.display(), old = %current.hash, new = %plugin.hash, queues = ?swapped, compile_ms = plugin.compile_time.as_millis() as u64, from_cache = plugin.from_cache, "Plugin swapped; the next messages run on the new version.");
                self.plugins.insert(path.to_owned(), plugin);
            }
            Err(e) => {
                QueueMetrics::add(&self.metrics.reloads.plugin_refused);
                tracing::warn!(path = %path.display(), reason = %e, kept = %current.hash, "Plugin file refused; the running version keeps serving.");
            }
        }
    }

    async fn reload_config(&mut self) {
        let refuse = |metrics: &Metrics| QueueMetrics::add(&metrics.reloads.config_refused);
        let mut new = match Config::load(&self.config.path) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.errors {
                    tracing::warn!(path = %errors.path.display(), key = %e.key, line = ?e.line, problem = %e.message, "queues.toml error.");
                }
                tracing::warn!(path = %errors.path.display(), errors = errors.errors.len(), "queues.toml edit refused; the running configuration stays.");
                refuse(&self.metrics);
                return;
            }
        };
        // The router's stream and every key name are fixed for the life of
        // the process.
        if new.host.prefix != self.config.host.prefix
            || new.ingress.stream != self.config.ingress.stream
        {
            tracing::warn!(
                "host.prefix and ingress.stream changes take effect at the next restart."
            );
        }
        new.host.prefix = self.config.host.prefix.clone();
        new.ingress = self.config.ingress.clone();
        let plugins = match prepare(&self.engine, &new, &self.plugins, &self.metrics).await {
            Ok(p) => p,
            Err(e) => {
                for line in e.to_string().lines() {
                    tracing::warn!(problem = %line, "queues.toml error.");
                }
                tracing::warn!("queues.toml edit refused; the running configuration stays.");
                refuse(&self.metrics);
                return;
            }
        };

        // Apply: the routes first, so no message is routed to a queue that
        // is about to start without its group.
        let removed: Vec<String> = self
            .queues
            .keys()
            .filter(|q| !new.queues.contains_key(*q))
            .cloned()
            .collect();
        self.plugins = plugins;
        for queue in new.queues.values() {
            let plugin = self.plugins[&queue.plugin].clone();
            match self.queues.get(&queue.name) {
                Some(handle) => {
                    handle
                        .runtime
                        .store(Arc::new(QueueRuntime::new(queue.clone(), plugin)));
                    handle.slots.resize(queue.concurrency as usize);
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
        for name in removed {
            if let Some(handle) = self.queues.remove(&name) {
                handle.stop.cancel();
                tracing::info!(queue = %name, "Queue removed: it stops reading; messages in flight finish.");
            }
        }
        self.config = new;
        QueueMetrics::add(&self.metrics.reloads.config_applied);
        tracing::info!(path = %self.config.path.display(), queues = self.queues.len(), "queues.toml applied.");
    }

    /// Keeps the streams bounded and the groups free of dead consumers (see
    /// [`crate::stream::retention`]).
    async fn maintain(&mut self) {
        let r = self.config.retention.clone();
        let mut streams = vec![self.config.ingress.stream.clone()];
        streams.extend(self.queues.keys().map(|q| self.keys.queue_stream(q)));
        let mut conn = self.conn.clone();
        let result = async {
            for stream in &streams {
                let trimmed = retention::trim_handled(&mut conn, stream, r.keep_handled).await?;
                if trimmed > 0 {
                    tracing::debug!(stream = %stream, trimmed, "Trimmed handled entries.");
                }
                let removed = retention::remove_idle_consumers(
                    &mut conn,
                    stream,
                    self.keys.group(),
                    r.idle_consumer,
                    &self.consumer,
                )
                .await?;
                if !removed.is_empty() {
                    tracing::info!(stream = %stream, consumers = ?removed, "Removed consumers idle with nothing pending.");
                }
            }
            let dead = self.keys.dead_letter();
            let trimmed = retention::trim_dead_letters(&mut conn, &dead, &r).await?;
            if trimmed > 0 {
                tracing::info!(stream = %dead, trimmed, "Trimmed dead letters past their retention.");
            }
            anyhow::Ok(())
        };
        match result.await {
            Ok(()) => self.health.ok(),
            Err(e) => self.health.failed("Trimming streams", &e),
        }
    }

    async fn drain(self) {
        self.readers.cancel();
        // Readers finish the read they are in (bounded by the block time),
        // and the router finishes routing what it read.
        self.loops.close();
        self.loops.wait().await;
        self.handlers.close();
        let in_flight = self.handlers.len();
        let timeout = self.config.host.shutdown_timeout;
        if in_flight > 0 {
            tracing::info!(in_flight, ?timeout, "Waiting for in-flight handlers.");
        }
        if tokio::time::timeout(timeout, self.handlers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = self.handlers.len(),
                "Shutdown timeout reached; unfinished messages stay pending and will be delivered again."
            );
        }
        tracing::info!("Switchyard stopped.");
    }
}

/// A host running on a task of its own: for the demo and the tests.
#[derive(Debug)]
pub struct RunningHost {
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningHost {
    pub fn start(config: Config, client: redis::Client) -> Self {
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, client, shutdown.clone(), metrics.clone()));
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
        self.shutdown.cancel();
        self.task.await.context("host task panicked")?
    }
}
