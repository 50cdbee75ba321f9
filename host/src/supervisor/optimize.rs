//! Plugins that started on Winch's code get Cranelift's. A large plugin's
//! new version is served as soon as Winch compiled it (see
//! [`PluginEngine::with_baseline`](crate::plugin::PluginEngine::with_baseline));
//! here a Cranelift compile of that version runs in the background, and its
//! code takes the place of Winch's in every queue running that version:
//! messages in flight finish on Winch's code, the next ones run on
//! Cranelift's. A newer version of the file, or a plugin no longer used,
//! drops its compile (and kills its child). One compile runs at a time:
//! each may take `plugin_compile_memory_mib` and both cores.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::config::PluginRef;
use crate::events;
use crate::plugin::{LoadError, LoadedPlugin};

use super::*;

/// A Cranelift compile of one plugin version.
pub(super) struct Optimizing {
    digest: String,
    /// None once it failed: the version keeps Winch's code, and is not
    /// compiled again until a new version of the file.
    _task: Option<AbortOnDropHandle<()>>,
}

/// A finished Cranelift compile.
pub(super) struct Optimized {
    source: PluginRef,
    digest: String,
    result: Result<LoadedPlugin, LoadError>,
}

/// Where finished compiles are sent, and received by the supervisor's loop.
pub(super) fn channel() -> (
    mpsc::UnboundedSender<Optimized>,
    mpsc::UnboundedReceiver<Optimized>,
) {
    mpsc::unbounded_channel()
}

impl Supervisor {
    /// Starts a Cranelift compile for each plugin running on Winch's code
    /// that has none, and drops those of versions no longer running.
    pub(super) fn optimize_plugins(&mut self) {
        let plugins = &self.plugins;
        self.optimizing.retain(|source, o| {
            plugins
                .get(source)
                .is_some_and(|p| p.digest == o.digest && p.is_baseline())
        });
        let limits = load_limits(&self.config());
        for (source, plugin) in &self.plugins {
            if !plugin.is_baseline() || self.optimizing.contains_key(source) {
                continue;
            }
            let engine = self.host.engine.clone();
            let (plugin, limits) = (plugin.clone(), limits.clone());
            let (sent, turn) = (self.optimized.clone(), self.compile_turn.clone());
            let digest = plugin.digest.clone();
            let (key, source) = (source.clone(), source.clone());
            let task = tokio::spawn(async move {
                let Ok(_turn) = turn.acquire_owned().await else {
                    return;
                };
                let result = engine.optimize(&plugin, &limits).await;
                let _ = sent.send(Optimized {
                    source,
                    digest: plugin.digest.clone(),
                    result,
                });
            });
            self.optimizing.insert(
                key,
                Optimizing {
                    digest,
                    _task: Some(AbortOnDropHandle::new(task)),
                },
            );
        }
    }

    /// Puts Cranelift's code in place of Winch's, if the version it was
    /// compiled from still runs.
    pub(super) fn optimized(&mut self, done: Optimized) {
        let current = match self.plugins.get(&done.source) {
            Some(p) if p.digest == done.digest && p.is_baseline() => p.clone(),
            _ => return,
        };
        let path = done.source.to_string();
        match done.result {
            Ok(plugin) => {
                self.optimizing.remove(&done.source);
                let plugin = Arc::new(plugin);
                let queues = self.swap_in(&done.source, &plugin);
                events::plugin_optimized(
                    &self.host.metrics,
                    &path,
                    &plugin.hash,
                    &queues.join(","),
                    plugin.compile_time,
                );
                // Winch's code for this version would not be read again.
                let engine = self.host.engine.clone();
                let digest = plugin.digest.clone();
                tokio::spawn(async move { engine.forget_baseline(&digest).await });
                self.plugins.insert(done.source, plugin);
            }
            Err(e) => {
                events::plugin_not_optimized(
                    &self.host.metrics,
                    &path,
                    &current.hash,
                    &e.to_string(),
                );
                self.optimizing.insert(
                    done.source,
                    Optimizing {
                        digest: done.digest,
                        _task: None,
                    },
                );
            }
        }
    }
}
