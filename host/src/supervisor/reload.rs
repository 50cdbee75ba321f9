//! Applying edits while running: a changed plugin file is swapped in for
//! the queues that use it, an edit of queues.toml is applied queue by queue;
//! what is refused leaves the running version serving.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::config::{Config, ConfigChanges, PluginRef};
use crate::events;
use crate::metrics::Metrics;
use crate::plugin::{LoadedPlugin, PluginEngine};
use crate::queue::QueueRuntime;
use crate::router::Router;

use super::*;

impl Supervisor {
    /// Applies a batch of changed files. Returns the plugin files of a
    /// queues.toml edit that was refused, to keep watching them.
    pub(super) async fn apply(&mut self, changed: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
        // A changed file the running configuration does not use belongs to
        // an edit that was refused: try that edit again.
        let path = self.config().path.clone();
        let retry = changed
            .iter()
            .any(|p| !self.plugins.contains_key(&PluginRef::File(p.clone())) && *p != path);
        if changed.contains(&path) || retry {
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
        let config = self.config();
        let metrics = self.host.metrics.clone();
        let limits = load_limits(&config);
        let using: Vec<String> = users(&config, source)
            .iter()
            .map(|q| q.name.clone())
            .collect();
        let refuse = |metrics: &Metrics, reason: &dyn fmt::Display| {
            let path = source.to_string();
            events::plugin_refused(metrics, &path, &current.hash, &using, &reason.to_string());
        };
        let Some(path) = source.file() else {
            return;
        };
        let file = match PluginEngine::read_async(path, &limits).await {
            // The same content (touched, rewritten): nothing to do.
            Ok(file) if file.digest == current.digest => return,
            Ok(file) => file,
            Err(e) => return refuse(&metrics, &e),
        };
        // A Cranelift compile of the running version would compete with
        // this load for the cores: it is stopped, and started again below
        // if that version keeps running.
        self.optimizing.remove(source);
        let plugin = match self.host.engine.load_file(source, file, &limits).await {
            Ok(plugin) => plugin,
            Err(e) => {
                refuse(&metrics, &e);
                return self.optimize_plugins();
            }
        };
        count_load(&metrics, &plugin);
        for q in users(&config, source) {
            for warning in missing_grants(&plugin, q) {
                tracing::warn!(path = %source, plugin = %plugin.hash, "queues.toml: {warning}");
            }
            if let Err(problem) = fits(&plugin, q) {
                let refusal = ConfigRefusal::Plugin {
                    queues: vec![q.name.clone()],
                    source: source.clone(),
                    error: problem,
                };
                refuse(&metrics, &refusal);
                return self.optimize_plugins();
            }
        }
        let plugin = Arc::new(plugin);
        let swapped = self.swap_in(source, &plugin);
        events::plugin_swapped(
            &metrics,
            &source.to_string(),
            &current.hash,
            &plugin.hash,
            &swapped.join(","),
            events::CodeOrigin {
                compile: plugin.compile_time,
                from_cache: plugin.from_cache,
                compiler: plugin.compiler(),
            },
        );
        self.plugins.insert(source.clone(), plugin);
        self.optimize_plugins();
    }

    /// Has every queue that runs `source` run `plugin` from its next
    /// message; returns their names.
    pub(super) fn swap_in(&self, source: &PluginRef, plugin: &Arc<LoadedPlugin>) -> Vec<String> {
        let mut swapped = Vec::new();
        for (name, q) in &self.queues {
            let rt = q.runtime.load();
            if rt.plugin.source == *source {
                q.runtime
                    .store(Arc::new(rt.with_plugin(plugin.clone(), &self.host)));
                swapped.push(name.clone());
            }
        }
        swapped
    }

    pub(super) async fn reload_config(&mut self) -> BTreeSet<PathBuf> {
        let running = self.config();
        let metrics = self.host.metrics.clone();
        let path = running.path.clone();
        let shown = path.display().to_string();
        let refuse =
            |metrics: &Metrics, count: usize| events::config_refused(metrics, &shown, count);
        // Reading the file, its CA files and the plugins' bytes blocks: off
        // the async runtime.
        let loading = path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&loading)).await;
        let Ok(loaded) = loaded else {
            tracing::error!(path = %shown, "Reading queues.toml failed (the reader panicked); the running configuration stays.");
            refuse(&metrics, 1);
            return BTreeSet::new();
        };
        let mut new = match loaded {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.errors {
                    tracing::warn!(path = %path.display(), "queues.toml error: {e}");
                }
                refuse(&metrics, errors.errors.len());
                return errors.plugins;
            }
        };
        for w in &new.warnings {
            tracing::warn!(path = %path.display(), "queues.toml: {w}");
        }
        let changes = ConfigChanges::between(&running, &new);
        // Every key name and the compiled-code cache are fixed for the life
        // of the process.
        new.host.prefix = running.host.prefix.clone();
        new.host.cache_dir = running.host.cache_dir.clone();
        new.ingress.stream = running.ingress.stream.clone();
        // The connection to Redis too.
        new.redis.username = running.redis.username.clone();
        new.redis.password = running.redis.password.clone();
        new.redis.sentinel_username = running.redis.sentinel_username.clone();
        new.redis.sentinel_password = running.redis.sentinel_password.clone();
        new.redis.ca_file = running.redis.ca_file.clone();
        let plugins = match prepare(&self.host.engine, &new, &self.plugins, &metrics).await {
            Ok(p) => p,
            Err(refusals) => {
                for r in &refusals.0 {
                    tracing::warn!(path = %path.display(), "queues.toml error: {r}");
                }
                refuse(&metrics, refusals.0.len());
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
        // The host-wide settings apply from now on: the runtimes below are
        // built under them.
        self.host.settings.store(Arc::new(new.clone()));
        for queue in new.queues.values() {
            let plugin = self.plugins[&queue.plugin].clone();
            match self.queues.get(&queue.name) {
                Some(handle) => {
                    handle.runtime.store(Arc::new(QueueRuntime::build(
                        queue.clone(),
                        plugin,
                        &self.host,
                    )));
                    // A fixed size is taken as it is; a scaled queue keeps
                    // its size within the new bounds.
                    let size = handle
                        .slots
                        .size()
                        .clamp(queue.concurrency_min as usize, queue.concurrency as usize);
                    handle.slots.resize(size);
                    metrics
                        .queue(&queue.name)
                        .concurrency
                        .store(size as u64, Ordering::Relaxed);
                }
                None => {
                    if let Err(e) = self.start_queue(queue.clone()).await {
                        tracing::error!(queue = %queue.name, error = %format!("{e:#}"), "Could not start a new queue; it is retried at the next edit.");
                        continue;
                    }
                    tracing::info!(event = "queue_added", queue = %queue.name, "Queue added.");
                }
            }
        }
        self.router.store(Arc::new(Router::new(&new)));
        if running.ingress.partitions != new.ingress.partitions
            && let Err(e) = self.register_partitions().await
        {
            // The partitions read stay as they were; the next edit, or a
            // restart, tries again.
            tracing::error!(error = %format!("{e:#}"), "Could not record the new partitions; still reading the old ones.");
        }
        // The tasks of queues removed earlier that are done are let go.
        self.retired.retain(|t| !t.is_done());
        for name in removed {
            if let Some(handle) = self.queues.remove(&name) {
                handle.stop.cancel();
                // Its acks and lease renewals stop once its last handler is
                // done. Its unread messages stay in its stream.
                for w in handle.workers.into_values() {
                    lifecycle::retire(&mut self.retired, w);
                }
                tracing::info!(event = "queue_removed", queue = %name, "Queue removed: it stops reading; messages in flight finish; messages never read stay in its stream.");
            }
        }
        for change in &changes.applied {
            tracing::info!(path = %shown, "queues.toml: applied {change}");
        }
        for change in &changes.at_restart {
            tracing::warn!(path = %shown, "queues.toml: {change} takes effect at the next restart");
        }
        self.optimize_plugins();
        let keys: Vec<&str> = changes.all().map(|c| c.key.as_str()).collect();
        events::config_applied(
            &metrics,
            &shown,
            self.queues.len(),
            changes.applied.len(),
            changes.at_restart.len(),
            &keys.join(","),
        );
        BTreeSet::new()
    }
}
