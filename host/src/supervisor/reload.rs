//! Applying edits while running: a changed plugin file is swapped in for
//! the queues that use it, an edit of queues.toml is applied queue by queue;
//! what is refused leaves the running version serving.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::config::{Config, ConfigChanges, PluginRef};
use crate::metrics::{Metrics, QueueMetrics};
use crate::queue::{QueueRuntime, RuntimeParts};
use crate::router::Router;

use super::*;

impl Supervisor {
    /// Applies a batch of changed files. Returns the plugin files of a
    /// queues.toml edit that was refused, to keep watching them.
    pub(super) async fn apply(&mut self, changed: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
        // A changed file the running configuration does not use belongs to
        // an edit that was refused: try that edit again.
        let retry = changed.iter().any(|p| {
            !self.plugins.contains_key(&PluginRef::File(p.clone())) && *p != self.config.path
        });
        if changed.contains(&self.config.path) || retry {
            // A config reload also picks up every changed plugin file.
            return self.reload_config().await;
        }
        let sources: Vec<PluginRef> = self
            .plugins
            .keys()
            .filter(|p| p.file().is_some_and(|f| changed.contains(f)))
            .cloned()
            .collect();
        for source in sources {
            self.reload_plugin(&source).await;
        }
        BTreeSet::new()
    }

    pub(super) async fn reload_plugin(&mut self, source: &PluginRef) {
        let current = self.plugins[source].clone();
        let limits = load_limits(&self.config);
        let using: Vec<String> = users(&self.config, source)
            .iter()
            .map(|q| q.name.clone())
            .collect();
        let refuse = |metrics: &Metrics, reason: &dyn fmt::Display| {
            QueueMetrics::add(&metrics.reloads.plugin_refused);
            for q in &using {
                metrics.queue(q).refused(&reason.to_string());
            }
            tracing::warn!(path = %source, reason = %reason, kept = %current.hash, "Plugin file refused; the running version keeps serving.");
        };
        let plugin = match self
            .engine
            .load(source, &limits, Some(&current.digest))
            .await
        {
            Ok(None) => return,
            Ok(Some(plugin)) => plugin,
            Err(e) => return refuse(&self.metrics, &e),
        };
        count_load(&self.metrics, &plugin);
        for q in users(&self.config, source) {
            for warning in missing_grants(&plugin, q) {
                tracing::warn!(path = %source, plugin = %plugin.hash, "queues.toml: {warning}");
            }
            if let Err(problem) = fits(&plugin, q) {
                let refusal = ConfigRefusal::Plugin {
                    queues: vec![q.name.clone()],
                    source: source.clone(),
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
            if rt.plugin.source == *source {
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
        tracing::info!(path = %source, old = %current.hash, new = %plugin.hash, queues = %swapped.join(","), compile_ms = plugin.compile_time.as_millis() as u64, from_cache = plugin.from_cache, "Plugin swapped; the next messages run on the new version.");
        self.plugins.insert(source.clone(), plugin);
    }

    pub(super) async fn reload_config(&mut self) -> BTreeSet<PathBuf> {
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
        let keys: Vec<&str> = changes.all().map(|c| c.key.as_str()).collect();
        tracing::info!(path = %path.display(), queues = self.queues.len(), applied = changes.applied.len(), at_restart = changes.at_restart.len(), changed = %keys.join(","), "queues.toml applied.");
        BTreeSet::new()
    }
}
