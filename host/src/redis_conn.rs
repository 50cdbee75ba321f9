//! Connections to Redis: a shared, self-reconnecting connection for ordinary
//! commands, and one dedicated connection per blocking reader.

use std::time::Duration;

use anyhow::{Context, Result};
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

/// The longest a blocking read waits; the reader's response timeout is set
/// above it, so a slow answer is not taken for a dead server.
pub const MAX_BLOCK: Duration = Duration::from_secs(2);

/// The shared connection for acks, claims, fan-out and dead letters. It
/// reconnects by itself after Redis restarts.
pub async fn shared(client: &redis::Client) -> Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    client
        .get_connection_manager_with_config(config)
        .await
        .with_context(|| format!("connecting to Redis at {}", describe(client)))
}

/// A dedicated connection for blocking reads, opened on first use and again
/// after an error.
pub struct Reader {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub fn new(client: redis::Client) -> Self {
        Reader { client, conn: None }
    }

    pub async fn get(&mut self) -> Result<&mut MultiplexedConnection> {
        if self.conn.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(MAX_BLOCK + Duration::from_secs(5)));
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .with_context(|| format!("connecting to Redis at {}", describe(&self.client)))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Drops the connection after an error; the next `get` reconnects.
    pub fn reset(&mut self) {
        self.conn = None;
    }
}

/// The server address, without credentials, for messages.
pub fn describe(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// Whether an error means Redis could not be reached (as opposed to Redis
/// answering with an error).
pub fn is_outage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<redis::RedisError>().is_some_and(|e| {
            e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.is_unrecoverable_error()
        }) || c.downcast_ref::<SharedFailure>().is_some_and(|s| s.outage)
    })
}

/// One command's failure as seen by each of the callers it was done for
/// (a batch of acks): the message, and whether it was an outage.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SharedFailure {
    pub message: String,
    pub outage: bool,
}

impl SharedFailure {
    pub fn new(e: &anyhow::Error) -> Self {
        SharedFailure {
            message: format!("{e:#}"),
            outage: is_outage(e),
        }
    }
}

/// Whether an error says a consumer group (or its stream) does not exist.
pub fn is_missing_group(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<redis::RedisError>())
        .any(|e| e.code() == Some("NOGROUP"))
}

/// Whether Redis answers, shared by every loop of a host, so that an outage
/// is logged once when it starts and once when it ends, not by every loop at
/// every retry.
#[derive(Debug, Default)]
pub struct Health {
    down_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Health {
    /// A call failed; `what` says which.
    pub fn failed(&self, what: &str, e: &anyhow::Error) {
        if !is_outage(e) {
            tracing::error!(error = %format!("{e:#}"), "{what} failed; retrying.");
            return;
        }
        let mut down = self.down_since.lock().expect("health lock");
        if down.is_none() {
            *down = Some(std::time::Instant::now());
            tracing::error!(error = %format!("{e:#}"), "Redis is unreachable; retrying with backoff until it is back.");
        } else {
            tracing::debug!(error = %format!("{e:#}"), "{what} failed: Redis still unreachable.");
        }
    }

    /// A call succeeded.
    pub fn ok(&self) {
        let mut down = self.down_since.lock().expect("health lock");
        if let Some(since) = down.take() {
            tracing::warn!(
                down_for_ms = since.elapsed().as_millis() as u64,
                "Redis is reachable again; resuming."
            );
        }
    }
}

/// Exponential backoff for a loop whose Redis calls fail: 100 ms doubling to
/// 2 s, so an outage neither spins nor delays recovery by more than 2 s.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ms = 100u64.saturating_mul(1 << self.failures.min(6).saturating_sub(1));
        Duration::from_millis(ms.min(2_000))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}
