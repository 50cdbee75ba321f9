//! The database pools and mail relays of the host's queues, kept across
//! reloads: a plugin swap, or an edit of queues.toml that leaves a queue's
//! `[sql]` or `[mail]` as it was, keeps its open connections. A changed
//! setting makes a new pool; the old one closes once the calls using it
//! end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::admin::metrics::QueueMetrics;
use crate::config::QueueConfig;
use crate::plugin::mail::QueueMail;
use crate::plugin::sql::QueueSql;

#[derive(Debug, Default)]
pub struct Pools {
    sql: Mutex<HashMap<String, Arc<QueueSql>>>,
    mail: Mutex<HashMap<String, Arc<QueueMail>>>,
}

impl Pools {
    /// The queue's database pool, if it is granted one.
    pub fn sql(&self, queue: &QueueConfig, metrics: &Arc<QueueMetrics>) -> Option<Arc<QueueSql>> {
        let mut map = self.sql.lock().expect("pools lock");
        let Some(settings) = &queue.sql else {
            map.remove(&queue.name);
            return None;
        };
        if let Some(pool) = map.get(&queue.name)
            && pool.settings() == settings
        {
            return Some(pool.clone());
        }
        match QueueSql::new(&queue.name, settings.clone(), metrics.clone()) {
            Ok(pool) => {
                let pool = Arc::new(pool);
                map.insert(queue.name.clone(), pool.clone());
                Some(pool)
            }
            Err(e) => {
                tracing::error!(queue = %queue.name, error = %format!("{e:#}"), "Could not set up the queue's database pool; its plugin gets no SQL.");
                map.remove(&queue.name);
                None
            }
        }
    }

    /// The queue's mail relay, if it is granted one.
    pub fn mail(&self, queue: &QueueConfig, metrics: &Arc<QueueMetrics>) -> Option<Arc<QueueMail>> {
        let mut map = self.mail.lock().expect("pools lock");
        let Some(settings) = &queue.mail else {
            map.remove(&queue.name);
            return None;
        };
        if let Some(relay) = map.get(&queue.name)
            && relay.settings() == settings
        {
            return Some(relay.clone());
        }
        match QueueMail::new(&queue.name, settings.clone(), metrics.clone()) {
            Ok(relay) => {
                let relay = Arc::new(relay);
                map.insert(queue.name.clone(), relay.clone());
                Some(relay)
            }
            Err(e) => {
                tracing::error!(queue = %queue.name, error = %format!("{e:#}"), "Could not set up the queue's mail relay; its plugin gets no mail.");
                map.remove(&queue.name);
                None
            }
        }
    }
}
