//! The host: connects to Redis, prepares streams and groups, loads every
//! plugin, runs the router and the queue workers, and drains on shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::metrics::Metrics;
use crate::config::Config;
use crate::dispatch::QueueWorker;
use crate::plugin::{LoadedPlugin, POOL_INSTANCES, PluginEngine};
use crate::redis_conn::{self, Reader};
use crate::router::Router;
use crate::stream::ingress::IngressRouter;
use crate::stream::queue::QueueStream;
use crate::stream::{Keys, ensure_group};

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

/// Compiles every plugin named in `config`, each file once, off the async
/// runtime. Fails with every refusal listed.
pub async fn load_plugins(
    engine: &PluginEngine,
    config: &Config,
) -> Result<BTreeMap<PathBuf, Arc<LoadedPlugin>>> {
    let mut loaded = BTreeMap::new();
    let mut errors = Vec::new();
    for queue in config.queues.values() {
        if loaded.contains_key(&queue.plugin) {
            continue;
        }
        let engine = engine.clone();
        let path = queue.plugin.clone();
        let result = tokio::task::spawn_blocking(move || engine.load(&path))
            .await
            .context("plugin compilation panicked")?;
        match result {
            Ok(plugin) => {
                tracing::info!(queue = %queue.name, plugin = %plugin.hash, path = %queue.plugin.display(), compile_ms = plugin.compile_time.as_millis() as u64, "Plugin loaded.");
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
    let total: u32 = config.queues.values().map(|q| q.concurrency).sum();
    if total > POOL_INSTANCES {
        bail!(
            "the queues' concurrency adds up to {total}, more than the {POOL_INSTANCES} plugin instances the host can run at once"
        );
    }
    let keys = Keys::new(&config.host.prefix);
    let mut conn = redis_conn::shared(&client).await?;
    ensure_group(&mut conn, &config.ingress.stream, keys.group()).await?;
    for name in config.queues.keys() {
        ensure_group(&mut conn, &keys.queue_stream(name), keys.group()).await?;
    }

    let engine = PluginEngine::new()?;
    let plugins = load_plugins(&engine, &config).await?;
    let consumer = consumer_name();
    tracing::info!(
        redis = %redis_conn::describe(&client),
        ingress = %config.ingress.stream,
        prefix = %config.host.prefix,
        consumer = %consumer,
        queues = config.queues.len(),
        "Switchyard started."
    );

    let readers = CancellationToken::new();
    let loops = TaskTracker::new();
    let handlers = TaskTracker::new();

    let router = IngressRouter {
        conn: conn.clone(),
        reader: Reader::new(client.clone()),
        keys: keys.clone(),
        stream: config.ingress.stream.clone(),
        consumer: consumer.clone(),
        batch: config.ingress.batch,
        visibility_timeout: config.ingress.visibility_timeout,
        router: Arc::new(arc_swap::ArcSwap::from_pointee(Router::new(&config))),
        metrics: metrics.clone(),
    };
    loops.spawn(router.run(readers.clone()));

    for queue in config.queues.values() {
        let worker = QueueWorker::new(
            Arc::new(queue.clone()),
            plugins[&queue.plugin].clone(),
            engine.clone(),
            QueueStream::new(conn.clone(), &keys, &queue.name, &consumer),
            Reader::new(client.clone()),
            metrics.queue(&queue.name),
        );
        loops.spawn(worker.run(readers.clone(), handlers.clone()));
    }
    loops.close();

    shutdown.cancelled().await;
    readers.cancel();
    // Readers finish the read they are in (bounded by the block time), and
    // the router finishes routing what it read.
    loops.wait().await;
    handlers.close();
    let in_flight = handlers.len();
    if in_flight > 0 {
        tracing::info!(in_flight, timeout = ?config.host.shutdown_timeout, "Waiting for in-flight handlers.");
    }
    if tokio::time::timeout(config.host.shutdown_timeout, handlers.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            unfinished = handlers.len(),
            "Shutdown timeout reached; unfinished messages stay pending and will be delivered again."
        );
    }
    tracing::info!("Switchyard stopped.");
    Ok(())
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
