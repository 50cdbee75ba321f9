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
