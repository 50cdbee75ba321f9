//! A Redis deployment as the host uses it: the shared connection of each
//! kind (one node, a Sentinel-followed master, a Redis Cluster), TLS and
//! credentials on every connection, and which node serves a key, for the
//! connections the host opens itself (the bounded readers).
//!
//! Sentinel: the master is looked up through the sentinels at start, then
//! checked every second and at once after a failed command; when it
//! changed, the shared connection moves to the new master and the log says
//! so (`event=redis_master_changed`). Cluster: redis-rs's cluster client
//! routes every command and follows MOVED, ASK and failovers; the host's
//! own readers look the node of their stream up in the slot map, read
//! again after a redirection.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::ConnectionManagerConfig;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates, TlsMode};

use super::conn::{Backoff, MAX_RETRY_DELAY, StreamError, StreamResult};
use super::endpoint::{Credentials, Endpoint, NodeAddr, Topology};
use super::shared::{Conn, Following};
use super::slots::SlotMap;

/// How often a Sentinel-followed master is checked.
const MASTER_CHECK: Duration = Duration::from_secs(1);
/// Topology is read again at most this often after redirections.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// A Redis deployment; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    /// The certificates redis-rs's connections trust (the web's roots and
    /// the CA file), when TLS is on.
    certs: Option<TlsCertificates>,
    /// The same, for the host's own connections.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Sentinel: the master found last.
    master: ArcSwap<Option<NodeAddr>>,
    sentinel: tokio::sync::Mutex<Option<SentinelClient>>,
    /// Cluster: the slot map read last.
    slots: ArcSwap<SlotMap>,
    /// When topology was last read, so redirections do not storm it.
    refreshed: Mutex<Option<Instant>>,
    refresh: tokio::sync::Mutex<()>,
    /// Where a master change is counted, once the host runs.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("endpoint", &self.inner.endpoint.describe())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// The deployment `endpoint` names; no connection is opened yet.
    pub fn new(endpoint: Endpoint) -> anyhow::Result<Redis> {
        let (certs, tls) = if endpoint.tls {
            let mut pem = crate::tls::web_roots_pem();
            if let Some(ca) = &endpoint.ca_pem {
                pem.extend_from_slice(ca);
            }
            let ca = endpoint.ca_pem.as_ref().map(|pem| crate::config::CaFile {
                path: "redis.ca_file".into(),
                pem: pem.clone(),
            });
            (
                Some(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                }),
                Some(Arc::new(crate::tls::client_config(ca.as_ref())?)),
            )
        } else {
            (None, None)
        };
        Ok(Redis {
            inner: Arc::new(Inner {
                endpoint,
                certs,
                tls,
                master: ArcSwap::from_pointee(None),
                sentinel: tokio::sync::Mutex::new(None),
                slots: ArcSwap::from_pointee(SlotMap::default()),
                refreshed: Mutex::new(None),
                refresh: tokio::sync::Mutex::new(()),
                metrics: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Counts what happens to the deployment (a master change) in
    /// `metrics` from now on.
    pub fn observe(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    /// What the URL and `[redis]` say.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// What the log names: nodes and master name, never a credential.
    pub fn describe(&self) -> String {
        self.inner.endpoint.describe()
    }

    /// A Redis Cluster: keys carry hash tags (see `crate::stream::layout`).
    pub fn is_cluster(&self) -> bool {
        self.inner.endpoint.is_cluster()
    }

    /// The TLS configuration of the host's own connections, if TLS is on.
    pub fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.inner.tls.clone()
    }

    /// The data nodes' credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.inner.endpoint.data
    }

    /// The database to select (0 on a cluster).
    pub fn db(&self) -> i64 {
        self.inner.endpoint.db
    }

    /// A redis-rs client for one data node.
    fn node_client(&self, node: &NodeAddr) -> redis::RedisResult<redis::Client> {
        let e = &self.inner.endpoint;
        let addr = match node {
            NodeAddr::Unix(path) => ConnectionAddr::Unix(path.clone()),
            NodeAddr::Tcp { host, port } if e.tls => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
            NodeAddr::Tcp { host, port } => ConnectionAddr::Tcp(host.clone(), *port),
        };
        let mut settings = RedisConnectionInfo::default().set_db(e.db);
        if let Some(u) = &e.data.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &e.data.password {
            settings = settings.set_password(p);
        }
        let info = addr.into_connection_info()?.set_redis_settings(settings);
        match &self.inner.certs {
            Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
            None => redis::Client::open(info),
        }
    }

    /// Opens the shared connection: multiplexed, reconnecting by itself,
    /// following a Sentinel master or a cluster's slots. Fails at once,
    /// with the cause, if Redis cannot be reached now.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        let fail = |e: redis::RedisError| {
            anyhow::anyhow!("cannot connect to Redis at {}: {e}", self.describe())
        };
        match &self.inner.endpoint.topology {
            Topology::Node(node) => {
                let client = self.node_client(node).map_err(fail)?;
                let manager = client
                    .get_connection_manager_with_config(manager_config())
                    .await
                    .map_err(fail)?;
                Ok(Conn::Node(manager))
            }
            Topology::Sentinel { .. } => {
                let master = self.find_master().await.map_err(fail)?;
                let manager = self
                    .node_client(&master)
                    .map_err(fail)?
                    .get_connection_manager_with_config(manager_config())
                    .await
                    .map_err(fail)?;
                let follow = Arc::new(Following {
                    current: ArcSwap::from_pointee((master, manager)),
                    suspect: tokio::sync::Notify::new(),
                });
                tokio::spawn(follow_master(self.clone(), Arc::downgrade(&follow)));
                Ok(Conn::Sentinel(follow))
            }
            Topology::Cluster { seeds } => {
                let e = &self.inner.endpoint;
                let infos = seeds
                    .iter()
                    .map(|s| self.node_client(s).map(|c| c.get_connection_info().clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(fail)?;
                let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(Duration::from_secs(10))
                    .retries(6)
                    .min_retry_wait(50)
                    .max_retry_wait(MAX_RETRY_DELAY.as_millis() as u64);
                if let Some(u) = &e.data.username {
                    builder = builder.username(u);
                }
                if let Some(p) = &e.data.password {
                    builder = builder.password(p);
                }
                if let Some(certs) = &self.inner.certs {
                    builder = builder.tls(TlsMode::Secure).certs(certs.clone());
                }
                let client = builder.build().map_err(fail)?;
                let conn = client.get_async_connection().await.map_err(fail)?;
                Ok(Conn::Cluster(conn))
            }
        }
    }

    /// The sentinels' client, built once.
    fn sentinel_client(&self) -> redis::RedisResult<SentinelClient> {
        let e = &self.inner.endpoint;
        let Topology::Sentinel { sentinels, master } = &e.topology else {
            unreachable!("only a Sentinel deployment asks its sentinels");
        };
        let addrs = sentinels.iter().map(|s| match s {
            NodeAddr::Tcp { host, port } if e.tls => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
            NodeAddr::Tcp { host, port } => ConnectionAddr::Tcp(host.clone(), *port),
            NodeAddr::Unix(p) => ConnectionAddr::Unix(p.clone()),
        });
        let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
            .set_client_to_redis_db(e.db);
        if let Some(u) = &e.data.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &e.data.password {
            b = b.set_client_to_redis_password(p);
        }
        if let Some(u) = &e.sentinel.username {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = &e.sentinel.password {
            b = b.set_client_to_sentinel_password(p);
        }
        if let Some(certs) = &self.inner.certs {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_certificates(certs.clone());
        }
        b.build()
    }

    /// Asks the sentinels for the master (checked to say it is one), and
    /// remembers it.
    async fn find_master(&self) -> redis::RedisResult<NodeAddr> {
        let mut guard = self.inner.sentinel.lock().await;
        if guard.is_none() {
            *guard = Some(self.sentinel_client()?);
        }
        let client = guard.as_mut().expect("just built");
        let found = tokio::time::timeout(Duration::from_secs(5), client.async_get_client())
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no sentinel answered within 5 s",
                ))
            })??;
        let node = match found.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                NodeAddr::Tcp {
                    host: host.clone(),
                    port: *port,
                }
            }
            ConnectionAddr::Unix(p) => NodeAddr::Unix(p.clone()),
            other => {
                return Err(redis::RedisError::from(std::io::Error::other(format!(
                    "the sentinels name a master at {other}, of a kind the host does not know"
                ))));
            }
        };
        self.inner.master.store(Arc::new(Some(node.clone())));
        Ok(node)
    }

    /// The node that serves `key` now (the master, on Sentinel), for a
    /// connection of the host's own.
    pub async fn node_for(&self, key: &str) -> StreamResult<NodeAddr> {
        let what = || format!("finding the Redis node of {key:?}");
        match &self.inner.endpoint.topology {
            Topology::Node(node) => Ok(node.clone()),
            Topology::Sentinel { .. } => {
                if let Some(m) = self.inner.master.load().as_ref() {
                    return Ok(m.clone());
                }
                self.find_master()
                    .await
                    .map_err(|e| StreamError::redis(what(), &e))
            }
            Topology::Cluster { .. } => {
                let slot = super::slots::key_slot(key.as_bytes());
                if let Some(node) = self.inner.slots.load().master_of(slot) {
                    return Ok(node.clone());
                }
                self.refresh_slots().await?;
                self.inner
                    .slots
                    .load()
                    .master_of(slot)
                    .cloned()
                    .ok_or_else(|| StreamError::outage(what(), "no node serves its slot"))
            }
        }
    }

    /// A node redirected a command, refused a write, or could not be
    /// reached: read the topology again (at most every 100 ms).
    pub async fn topology_changed(&self) {
        let _one = self.inner.refresh.lock().await;
        {
            let mut last = self.inner.refreshed.lock().expect("refresh lock");
            if last.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
                return;
            }
            *last = Some(Instant::now());
        }
        match &self.inner.endpoint.topology {
            Topology::Node(_) => {}
            Topology::Sentinel { .. } => {
                if let Err(e) = self.find_master().await {
                    tracing::debug!(error = %e, "The sentinels did not name a master.");
                }
            }
            Topology::Cluster { .. } => {
                if let Err(e) = self.read_slots().await {
                    tracing::debug!(error = %e, "The cluster's slots could not be read.");
                }
            }
        }
    }

    async fn refresh_slots(&self) -> StreamResult<()> {
        let _one = self.inner.refresh.lock().await;
        if !self.inner.slots.load().is_empty() {
            return Ok(());
        }
        *self.inner.refreshed.lock().expect("refresh lock") = Some(Instant::now());
        self.read_slots().await
    }

    /// Reads `CLUSTER SLOTS` from the first node that answers: the masters
    /// known, then the URL's nodes.
    async fn read_slots(&self) -> StreamResult<()> {
        let Topology::Cluster { seeds } = &self.inner.endpoint.topology else {
            return Ok(());
        };
        let mut nodes = self.inner.slots.load().masters();
        nodes.extend(seeds.iter().cloned());
        let mut last = StreamError::outage("reading the cluster's slots", "no node to ask");
        for node in nodes {
            let read = async {
                let client = self
                    .node_client(&node)
                    .map_err(|e| StreamError::redis("connecting", &e))?;
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| StreamError::redis(format!("connecting to {node}"), &e))?;
                let reply: redis::Value = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| StreamError::redis(format!("CLUSTER SLOTS on {node}"), &e))?;
                SlotMap::parse(&reply, &node).map_err(|detail| {
                    StreamError::protocol(format!("CLUSTER SLOTS on {node}"), detail)
                })
            };
            match tokio::time::timeout(Duration::from_secs(3), read).await {
                Ok(Ok(map)) if !map.is_empty() => {
                    self.inner.slots.store(Arc::new(map));
                    return Ok(());
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = StreamError::outage(
                        format!("reading the cluster's slots from {node}"),
                        "no answer within 3 s",
                    )
                }
            }
        }
        Err(last)
    }
}

/// Checks the master every [`MASTER_CHECK`], or at once when a command
/// failed, and moves the connection when it changed; ends when the
/// connection is dropped.
async fn follow_master(redis: Redis, follow: Weak<Following>) {
    loop {
        {
            let Some(f) = follow.upgrade() else { return };
            let _ = tokio::time::timeout(MASTER_CHECK, f.suspect.notified()).await;
        }
        let Ok(master) = redis.find_master().await else {
            continue;
        };
        let Some(f) = follow.upgrade() else { return };
        let was = f.current.load().0.clone();
        if master == was {
            continue;
        }
        let client = match redis.node_client(&master) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, master = %master, "Cannot use the new Redis master.");
                continue;
            }
        };
        match client
            .get_connection_manager_with_config(manager_config())
            .await
        {
            Ok(manager) => {
                f.current.store(Arc::new((master.clone(), manager)));
                match redis.inner.metrics.get() {
                    Some(m) => {
                        crate::events::master_changed(m, &was.to_string(), &master.to_string())
                    }
                    None => tracing::warn!(
                        event = "redis_master_changed",
                        from = %was,
                        to = %master,
                        "The Sentinel master changed; now using the new one."
                    ),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, master = %master, "The sentinels name a new master that cannot be reached yet; retrying.");
            }
        }
    }
}

/// Connects to Redis for a host that is starting: says where first, and
/// while Redis cannot be reached says why once and keeps trying (a host is
/// often started before its Redis), until `stop` fires.
pub async fn connect_patiently(
    redis: &Redis,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<Conn>> {
    tracing::info!(redis = %redis.describe(), "Connecting to Redis.");
    let mut backoff = Backoff::default();
    let mut told = false;
    loop {
        match redis.connect().await {
            Ok(conn) => {
                if told {
                    tracing::info!(redis = %redis.describe(), "Connected to Redis.");
                }
                return Ok(Some(conn));
            }
            Err(e) => {
                if !told {
                    tracing::error!(event = "redis_unreachable", error = %format!("{e:#}"), "Redis is unreachable; retrying until it answers (SIGINT or SIGTERM to stop).");
                    told = true;
                } else {
                    tracing::debug!(error = %format!("{e:#}"), "Redis still unreachable.");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff.delay()) => {}
        }
    }
}

/// The shared connection's reconnection policy: quick, capped at
/// [`MAX_RETRY_DELAY`], so that commands succeed again soon after Redis is
/// back.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(MAX_RETRY_DELAY)
        .set_number_of_retries(2)
}
