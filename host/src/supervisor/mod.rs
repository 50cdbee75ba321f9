//! The host: connects to Redis, prepares streams and groups, loads every
//! plugin, runs the router and the queue workers, applies edits of plugin
//! files and queues.toml while running, and drains on shutdown.
//!
//! - [`preflight`]: what a configuration needs before it runs (shared with
//!   `check`);
//! - [`lifecycle`]: starting the routers and queues of each partition, and
//!   maintenance; drain;
//! - [`partitions`]: which partitions are read (a changed count drains the
//!   old ones);
//! - [`reload`]: plugin swaps and edits of queues.toml;
//! - [`maintain`]: retention and consumer clean-up;
//! - `optimize`: Cranelift's code in place of Winch's for large plugins'
//!   new versions;
//! - `running`: a host on a task, for programs that embed it (the
//!   `in-process` feature).

pub mod lifecycle;
pub mod maintain;
mod optimize;
pub mod partitions;
pub mod preflight;
pub mod reload;
#[cfg(feature = "in-process")]
pub mod running;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugin::Compiler;
use crate::queue::QueueContext;
use crate::redis::Health;
use crate::router::Router;
use crate::shutdown::Shutdown;
use crate::stream::{Keys, Replicas};
use crate::watch::Watcher;

pub use preflight::{
    ConfigRefusal, ConfigRefusals, PluginProblem, Plugins, consumer_name, engine, fits,
    load_limits, load_plugins, missing_grants, prepare,
};
#[cfg(feature = "in-process")]
pub use running::RunningHost;

use lifecycle::Supervisor;
use preflight::{count_load, files_to_watch, log_missing_grants, users};

/// Runs the host until `shutdown.drain` fires, then drains: stops reading,
/// gives in-flight handlers `shutdown_timeout` to finish (or less, if
/// `shutdown.now` fires), and returns. What did not finish stays pending and
/// is delivered again later; nothing unhandled is acknowledged.
pub async fn run(
    config: Config,
    redis: crate::redis::Redis,
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
            let state = Arc::new(crate::admin::AdminState::new(
                metrics.clone(),
                current.clone(),
                redis.clone(),
            ));
            let tls = match &a.tls {
                Some(t) => Some(Arc::new(
                    crate::tls::server_config(&t.cert_pem, &t.key_pem)
                        .map_err(|e| anyhow::anyhow!("admin.tls_cert, admin.tls_key: {e:?}"))?,
                )),
                None => None,
            };
            // The dashboard's charts: sampled while the run lasts, when the
            // dashboard can be read at all.
            let sampling = shutdown.drain.child_token();
            if state.token.is_some() || state.read_token.is_some() {
                tokio::spawn(crate::admin::sampler::sample(
                    state.clone(),
                    sampling.clone(),
                ));
            }
            let app = crate::admin::router(state);
            Some((
                crate::admin::listen::AdminServer::start(
                    listener,
                    tls,
                    app,
                    shutdown.drain.child_token(),
                )
                .context("starting the admin server")?,
                sampling.drop_guard(),
            ))
        }
        None => None,
    };
    // Watch before loading, so a file replaced while the host starts is
    // still noticed (a change to what was just loaded is a no-op).
    let mut watcher = match Watcher::new() {
        Ok(mut w) => {
            w.watch(files_to_watch(&config)).await;
            Some(w)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Cannot watch files; plugins and queues.toml will not be reloaded.");
            None
        }
    };
    redis.observe(metrics.clone());
    let Some(conn) = crate::redis::connect_patiently(&redis, &shutdown.drain).await? else {
        return Ok(());
    };
    let engine = engine(&config, compiler)?;
    let (optimized, mut optimized_rx) = optimize::channel();
    let none = Plugins::new();
    let plugins = tokio::select! {
        _ = shutdown.drain.cancelled() => return Ok(()),
        p = prepare(&engine, &config, &none, &metrics) => p?,
    };
    log_missing_grants(&config, &plugins);
    let consumer = consumer_name();
    tracing::info!(
        event = "started",
        redis = %redis.describe(),
        ingress = %config.ingress.stream,
        partitions = config.ingress.partitions,
        prefix = %config.host.prefix,
        consumer = %consumer,
        queues = config.queues.len(),
        "Switchyard started."
    );

    let mut host = Supervisor {
        router: Arc::new(ArcSwap::from_pointee(Router::new(&config))),
        host: QueueContext {
            redis: redis.clone(),
            conn,
            keys: Keys::new(
                &config.host.prefix,
                &config.ingress.stream,
                redis.is_cluster(),
            ),
            replicas: Replicas::new(current.clone(), metrics.clone(), redis.clone()),
            consumer,
            engine,
            metrics,
            pools: Default::default(),
            health: Arc::new(Health::default()),
            settings: current,
        },
        plugins,
        queues: BTreeMap::new(),
        partitions: BTreeMap::new(),
        registered: None,
        readers: CancellationToken::new(),
        loops: TaskTracker::new(),
        retired: Vec::new(),
        optimizing: BTreeMap::new(),
        optimized,
        compile_turn: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    host.start_maintenance();
    for queue in config.queues.clone().into_values() {
        host.start_queue(queue).await?;
    }
    host.register_partitions().await?;
    host.optimize_plugins();
    let mut check = tokio::time::interval(partitions::CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;

    loop {
        let changed = async {
            match &mut watcher {
                Some(w) => w.changes().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.drain.cancelled() => break,
            Some(done) = optimized_rx.recv() => host.optimized(done),
            _ = check.tick() => {
                let checked = tokio::select! {
                    _ = shutdown.drain.cancelled() => break,
                    r = tokio::time::timeout(partitions::CHECK_INTERVAL, host.check_partitions()) => r,
                };
                match checked {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %format!("{e:#}"), "Checking the partitions failed; retried soon."),
                    Err(_) => tracing::debug!("Checking the partitions took too long; retried soon."),
                }
            }
            changed = changed => {
                                // A reload (and the compile in it) gives way to shutdown.
                let attempted = tokio::select! {
                    _ = shutdown.drain.cancelled() => break,
                    attempted = host.apply(&changed) => attempted,
                };
                // The files of an edit that was refused are watched too: a
                // plugin it names may be built after it was saved.
                if let Some(w) = &mut watcher {
                    let mut files = files_to_watch(&host.config());
                    files.extend(attempted);
                    w.watch(files).await;
                }
            }
        }
    }
    host.drain(&shutdown.now).await;
    Ok(())
}
