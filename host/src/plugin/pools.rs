//! The database pools and mail relays of the host's queues, kept across
//! reloads: a plugin swap, or an edit of queues.toml that leaves a queue's
//! `[sql]` or `[mail]` as it was, keeps its open connections. A changed
//! setting makes a new pool; the old one closes once the calls using it
//! end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::QueueConfig;
use crate::metrics::QueueMetrics;
use crate::plugin::mail::QueueMail;
use crate::plugin::sql::QueueSql;

#[derive(Debug, Default)]
pub struct Pools {
    sql: Mutex<HashMap<String, Arc<QueueSql>>>,
    mail: Mutex<HashMap<String, Arc<QueueMail>>>,
}

/// The queue's entry of `map`: kept while `settings` equal those it was
/// made with, made anew (by `make`) when they changed, removed when the
/// queue has none.
fn entry<T, S: PartialEq + Clone>(
    map: &Mutex<HashMap<String, Arc<T>>>,
    queue: &str,
    settings: Option<&S>,
    settings_of: impl Fn(&T) -> &S,
    make: impl FnOnce(S) -> anyhow::Result<T>,
    what: &str,
) -> Option<Arc<T>> {
    let mut map = map.lock().expect("pools lock");
    let Some(settings) = settings else {
        map.remove(queue);
        return None;
    };
    if let Some(kept) = map.get(queue)
        && settings_of(kept) == settings
    {
        return Some(kept.clone());
    }
    match make(settings.clone()) {
        Ok(made) => {
            let made = Arc::new(made);
            map.insert(queue.to_owned(), made.clone());
            Some(made)
        }
        Err(e) => {
            tracing::error!(queue, error = %format!("{e:#}"), "Could not set up the queue's {what}; its plugin goes without.");
            map.remove(queue);
            None
        }
    }
}

impl Pools {
    /// The queue's database pool, if it is granted one.
    pub fn sql(&self, queue: &QueueConfig, metrics: &Arc<QueueMetrics>) -> Option<Arc<QueueSql>> {
        entry(
            &self.sql,
            &queue.name,
            queue.sql.as_ref(),
            QueueSql::settings,
            |s| QueueSql::new(&queue.name, s, metrics.clone()),
            "database pool",
        )
    }

    /// The queue's mail relay, if it is granted one.
    pub fn mail(&self, queue: &QueueConfig, metrics: &Arc<QueueMetrics>) -> Option<Arc<QueueMail>> {
        entry(
            &self.mail,
            &queue.name,
            queue.mail.as_ref(),
            QueueMail::settings,
            |s| QueueMail::new(&queue.name, s, metrics.clone()),
            "mail relay",
        )
    }
}
