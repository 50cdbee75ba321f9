//! What a queue runs with now: its settings, its plugin version and the
//! context of its calls, swapped whole on a reload.

use std::sync::Arc;

use crate::config::{MissingGroup, QueueConfig};
use crate::metrics::QueueMetrics;
use crate::plugin::http::QueueHttp;
use crate::plugin::keyvalue::KeyValueStore;
use crate::plugin::{CallContext, LoadedPlugin, WarmPool};

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
    /// What to do if the queue's consumer group vanishes.
    pub on_missing_group: MissingGroup,
}

/// What every runtime of a queue is made with, besides its settings and
/// plugin.
#[derive(Debug, Clone)]
pub struct RuntimeParts {
    pub on_missing_group: MissingGroup,
    /// For the queue's key-value state.
    pub conn: redis::aio::ConnectionManager,
    pub prefix: String,
    /// The largest message a plugin may publish: the ingress bound.
    pub max_publish_bytes: usize,
    pub metrics: Arc<QueueMetrics>,
    /// Database pools and mail relays, kept across reloads.
    pub pools: Arc<crate::plugin::pools::Pools>,
}

impl QueueRuntime {
    pub fn new(queue: QueueConfig, plugin: Arc<LoadedPlugin>, parts: &RuntimeParts) -> Self {
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
                parts.metrics.clone(),
            )),
            secrets,
            keyvalue: queue.keyvalue.clone().map(|grant| {
                KeyValueStore::new(parts.conn.clone(), &parts.prefix, &queue.name, grant)
            }),
            publish: Arc::new(queue.publish.clone()),
            max_publish_bytes: parts.max_publish_bytes,
            sql: parts.pools.sql(&queue, &parts.metrics),
            mail: parts.pools.mail(&queue, &parts.metrics),
            metrics: parts.metrics.clone(),
        };
        parts.metrics.runs(crate::metrics::PluginInfo {
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
            on_missing_group: parts.on_missing_group,
        }
    }
}
