//! What the admin server's handlers share: the host's counters, the
//! running configuration, the tokens, one connection to Redis, and the
//! last read of Redis for the gauges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::status::{self, Status};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::stream::Keys;

/// How long one read of Redis for a scrape or a readiness check may take.
pub(crate) const REDIS_BUDGET: Duration = Duration::from_secs(2);
/// The oldest read of Redis a readiness check answers from.
pub(crate) const READY_STATS_AGE: Duration = Duration::from_secs(1);

/// What the handlers share.
pub struct AdminState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: Arc<ArcSwap<Config>>,
    /// The admin token (reads and actions) and the read-only one, as the
    /// host started with them (restart to change them).
    pub(crate) token: Option<String>,
    pub(crate) read_token: Option<String>,
    redis: crate::redis::Redis,
    conn: tokio::sync::Mutex<Option<crate::redis::Conn>>,
    /// The last read of Redis, and when.
    stats: tokio::sync::Mutex<Option<(Instant, Arc<Stats>)>>,
    /// One turn at reading the dead letters (see `dashboard::budget`).
    pub(crate) scans: tokio::sync::Semaphore,
    /// The charts' samples (see `history.rs`).
    pub(crate) history: std::sync::Mutex<super::history::History>,
}

/// What `/metrics` reads from Redis.
#[derive(Debug, Default)]
pub struct Stats {
    /// `None` when Redis could not be read.
    pub status: Option<Status>,
    /// Age of each queue's oldest pending message, seconds.
    pub oldest_pending: BTreeMap<String, f64>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

impl AdminState {
    pub fn new(
        metrics: Arc<Metrics>,
        config: Arc<ArcSwap<Config>>,
        redis: crate::redis::Redis,
    ) -> Self {
        let loaded = config.load();
        let admin = loaded.admin.as_ref();
        AdminState {
            metrics,
            config,
            token: admin
                .and_then(|a| a.token.as_ref())
                .map(|t| t.value.clone()),
            read_token: admin
                .and_then(|a| a.read_token.as_ref())
                .map(|t| t.value.clone()),
            redis,
            conn: tokio::sync::Mutex::new(None),
            stats: tokio::sync::Mutex::new(None),
            scans: tokio::sync::Semaphore::new(1),
            history: std::sync::Mutex::default(),
        }
    }

    /// The key names of `config` on this host's Redis.
    pub(crate) fn keys(&self, config: &Config) -> Keys {
        Keys::of(config, self.redis.is_cluster())
    }

    pub(crate) async fn conn(&self) -> Option<crate::redis::Conn> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = tokio::time::timeout(REDIS_BUDGET, self.redis.connect())
                .await
                .ok()
                .and_then(Result::ok);
        }
        conn.clone()
    }

    /// The stats, read again when older than `stats_interval`.
    pub(crate) async fn stats(&self) -> Arc<Stats> {
        self.stats_within(Duration::MAX).await
    }

    /// [`AdminState::stats`], read again if older than `max_age`.
    pub(crate) async fn stats_within(&self, max_age: Duration) -> Arc<Stats> {
        let config = self.config.load_full();
        let interval = config
            .admin
            .as_ref()
            .map_or(Duration::from_secs(5), |a| a.stats_interval)
            .min(max_age);
        let mut cached = self.stats.lock().await;
        if let Some((at, stats)) = cached.as_ref()
            && at.elapsed() < interval
        {
            return stats.clone();
        }
        let stats = Arc::new(self.read_stats(&config).await);
        *cached = Some((Instant::now(), stats.clone()));
        stats
    }

    async fn read_stats(&self, config: &Config) -> Stats {
        let Some(mut conn) = self.conn().await else {
            return Stats::default();
        };
        let read = async {
            let keys = self.keys(config);
            let status = status::read(&mut conn, config, &keys, 0).await?;
            let mut oldest = BTreeMap::new();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let partitions: Vec<_> = status
                .partitions
                .iter()
                .map(|p| keys.by_id(&p.id))
                .collect();
            for name in config.queues.keys() {
                // The oldest over the partitions.
                let mut age: f64 = 0.0;
                for p in &partitions {
                    // XPENDING's summary: count, smallest id, largest id,
                    // consumers.
                    let summary: redis::Value = redis::cmd("XPENDING")
                        .arg(p.queue_stream(name))
                        .arg(keys.group())
                        .query_async(&mut conn)
                        .await
                        .unwrap_or(redis::Value::Nil);
                    let first = match &summary {
                        redis::Value::Array(v) => v.get(1).and_then(crate::redis::reply::string),
                        _ => None,
                    };
                    let this = first
                        .and_then(|id| {
                            id.split_once('-')
                                .and_then(|(ms, _)| ms.parse::<u64>().ok())
                        })
                        .map_or(0.0, |ms| now.saturating_sub(ms) as f64 / 1000.0);
                    age = age.max(this);
                }
                oldest.insert(name.clone(), age);
            }
            anyhow::Ok(Stats {
                status: Some(status),
                oldest_pending: oldest,
            })
        };
        match tokio::time::timeout(REDIS_BUDGET, read).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                tracing::debug!(error = %format!("{e:#}"), "Metrics could not read Redis.");
                Stats::default()
            }
            Err(_) => Stats::default(),
        }
    }
}
