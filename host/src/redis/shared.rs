//! The shared connection to a deployment, one for a host's ordinary
//! commands: multiplexed and reconnecting by itself; on Sentinel it follows
//! the master ([`Following`]), on a cluster it routes each command to its
//! slot's node. Blocking reads have connections of their own
//! ([`crate::redis::bounded`]).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::RedisFuture;
use redis::Value;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use super::conn::{Doing, StreamError, StreamResult};
use super::endpoint::NodeAddr;

/// The shared connection to a deployment: multiplexed, reconnecting by
/// itself; on Sentinel it follows the master, on a cluster it routes each
/// command to its slot's node (see [`super::deployment`]).
#[derive(Clone)]
pub enum Conn {
    Node(ConnectionManager),
    Sentinel(Arc<Following>),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conn::Node(_) => f.write_str("Conn::Node"),
            Conn::Sentinel(follow) => write!(f, "Conn::Sentinel({follow:?})"),
            Conn::Cluster(_) => f.write_str("Conn::Cluster"),
        }
    }
}

/// Whether a failed command suggests the master moved: it could not be
/// reached, or it no longer takes writes.
fn master_suspect(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(follow) => {
                let follow = follow.clone();
                Box::pin(async move {
                    let mut manager = follow.manager();
                    let reply = manager.req_packed_command(cmd).await;
                    if let Err(e) = &reply
                        && master_suspect(e)
                    {
                        follow.suspect();
                    }
                    reply
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(follow) => {
                let follow = follow.clone();
                Box::pin(async move {
                    let mut manager = follow.manager();
                    let reply = manager.req_packed_commands(pipeline, offset, count).await;
                    if let Err(e) = &reply
                        && master_suspect(e)
                    {
                        follow.suspect();
                    }
                    reply
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(follow) => follow.manager().get_db(),
        }
    }
}

impl Conn {
    /// Waits until `replicas` replicas have every write this connection
    /// made to the node of `key`, at most `timeout`; returns how many did
    /// (`WAIT`).
    pub async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> StreamResult<u32> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout.as_millis() as u64);
        let what = || format!("waiting for {replicas} replicas of {key:?}");
        let reply: Value = match self {
            Conn::Cluster(c) => {
                let route = Route::new(super::slots::key_slot(key.as_bytes()), SlotAddr::Master);
                c.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await
                .doing(what)?
            }
            conn => cmd.query_async(conn).await.doing(what)?,
        };
        match reply {
            Value::Int(n) => Ok(n.clamp(0, i64::from(u32::MAX)) as u32),
            other => Err(StreamError::protocol(what(), format!("{other:?}"))),
        }
    }
}

/// A Sentinel-followed master's connection, moved to the new master when
/// the sentinels name another (see [`super::deployment`]).
pub struct Following {
    pub(super) current: ArcSwap<(NodeAddr, ConnectionManager)>,
    /// A command failed: check the master now.
    pub(super) suspect: tokio::sync::Notify,
}

impl std::fmt::Debug for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Following")
            .field("master", &self.current.load().0)
            .finish_non_exhaustive()
    }
}

impl Following {
    /// The connection to the master as known now.
    fn manager(&self) -> ConnectionManager {
        self.current.load().1.clone()
    }

    /// A command failed: the follower checks the master now rather than at
    /// its next tick (one wake-up stands for any number of failures).
    fn suspect(&self) {
        self.suspect.notify_one();
    }
}
