//! What a queue runs with now (its settings, its plugin version and the
//! context of its calls, swapped whole on a reload), and the context the
//! host builds every queue from.

use std::sync::Arc;

use crate::redis::Conn;
use arc_swap::ArcSwap;

use crate::config::{Config, MissingGroup, QueueConfig};
use crate::metrics::Metrics;
use crate::plugin::http::QueueHttp;
use crate::plugin::keyvalue::KeyValueStore;
use crate::plugin::pools::Pools;
use crate::plugin::{CallContext, LoadedPlugin, PluginEngine, WarmPool};
use crate::redis::Health;
use crate::stream::Keys;

/// What the host gives every queue it runs, built once at start: a queue's
/// runtime and workers are built from its settings and this.
#[derive(Debug, Clone)]
pub struct QueueContext {
    /// For the connections of blocking reads, one per queue and partition.
    pub redis: crate::redis::Redis,
    /// Shared by settling, key-value state and the claims.
    pub conn: Conn,
    pub keys: Keys,
    /// Waits for replicas after each step, as `redis.wait_replicas` says.
    pub replicas: crate::stream::Replicas,
    /// This host's consumer name in every group.
    pub consumer: String,
    pub engine: PluginEngine,
    pub metrics: Arc<Metrics>,
    /// Database pools and mail relays, kept across reloads.
    pub pools: Arc<Pools>,
    /// Whether Redis answers, for logging outages once.
    pub health: Arc<Health>,
    /// The configuration running now, swapped whole on a reload: the one
    /// copy of the host-wide settings that apply while running
    /// (`host.on_missing_group`, `ingress.max_entry_kib`).
    pub settings: Arc<ArcSwap<Config>>,
}

impl QueueContext {
    /// What to do if a consumer group vanishes, as configured now.
    pub fn on_missing_group(&self) -> MissingGroup {
        self.settings.load().host.on_missing_group
    }
}

/// What a queue runs with now: its settings and its plugin version. Swapped
/// whole on a reload; each message loads it once, at its start, so a message
/// runs on one version from start to end and the next message on the newest.
#[derive(Debug)]
pub struct QueueRuntime {
    pub queue: Arc<QueueConfig>,
    pub plugin: Arc<LoadedPlugin>,
    pub cx: CallContext,
    /// Instances kept between messages, if the queue reuses them.
    pub warm: Option<Arc<WarmPool>>,
}

impl QueueRuntime {
    /// The runtime of `queue` running `plugin`, under the settings running
    /// now.
    pub fn build(queue: QueueConfig, plugin: Arc<LoadedPlugin>, host: &QueueContext) -> Self {
        let metrics = host.metrics.queue(&queue.name);
        let secrets = Arc::new(crate::secrets::Secrets::new(
            queue.secrets.iter().map(|s| s.value.as_str()),
        ));
        let cx = CallContext {
            queue: queue.name.as_str().into(),
            timeout: queue.handler_timeout,
            memory_bytes: queue.memory_mib as usize * 1024 * 1024,
            config: Arc::new(queue.plugin_config.clone()),
            http: Arc::new(QueueHttp::new(
                &queue.name,
                queue.http.clone(),
                secrets.clone(),
                metrics.clone(),
            )),
            secrets,
            keyvalue: queue.keyvalue.clone().map(|grant| {
                KeyValueStore::new(host.conn.clone(), host.keys.keyvalue(&queue.name), grant)
            }),
            publish: Arc::new(queue.publish.clone()),
            // The largest message a plugin may publish: the ingress bound.
            max_publish_bytes: host.settings.load().ingress.max_entry_bytes,
            sql: host.pools.sql(&queue, &metrics),
            mail: host.pools.mail(&queue, &metrics),
            metrics: metrics.clone(),
        };
        metrics.runs(crate::metrics::PluginInfo {
            version: plugin.hash.clone(),
            contract: plugin.contract().to_owned(),
            loaded_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            compile_seconds: plugin.compile_time.as_secs_f64(),
        });
        QueueRuntime {
            warm: queue.reuse_instances.then(|| Arc::new(WarmPool::default())),
            queue: Arc::new(queue),
            plugin,
            cx,
        }
    }

    /// The same queue on another plugin version.
    pub fn with_plugin(&self, plugin: Arc<LoadedPlugin>, host: &QueueContext) -> Self {
        Self::build((*self.queue).clone(), plugin, host)
    }
}
