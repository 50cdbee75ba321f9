//! Connections to a queue's SMTP relay, opened by the host and pooled.
//!
//! lettre speaks SMTP on them (`AsyncSmtpConnection`), but the host opens
//! the TCP connection itself, to set `TCP_NODELAY`: lettre writes a mail's
//! data and its final `.` in two writes, and with Nagle's algorithm on,
//! the second waits for the relay to acknowledge the first, which a relay
//! with nothing to answer yet delays (40 ms on Linux) — a floor of 40 ms
//! a mail. Then, as `smtp_url` says: TLS from the start (`smtps://`),
//! STARTTLS (`?tls=required`, or `?tls=opportunistic` when offered), the
//! relay's login, and a deadpool pool of at most `pool` connections; a
//! pooled connection is checked with `NOOP` before it is used again, and
//! one that failed or ran out of time mid-command is closed, never pooled.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncNetworkStream, AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::config::{Security, SmtpRelay};

type SmtpError = lettre::transport::smtp::Error;

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No connection ready to send: the relay unreachable, TLS, the
    /// greeting, the login (a refused password is the operator's to fix,
    /// not the mail's fault), or no pooled connection free.
    #[error("connecting to the relay: {0}")]
    Setup(String),
    /// The relay's answer to the mail itself.
    #[error("{0}")]
    Smtp(#[from] SmtpError),
}

impl RelayError {
    /// A 5xx answer to the mail: the relay refused it for good.
    pub fn is_permanent(&self) -> bool {
        matches!(self, RelayError::Smtp(e) if e.is_permanent())
    }
}

/// A relay, as its queue's `smtp_url` and credentials name it.
#[derive(Clone)]
pub struct Relay {
    host: String,
    port: u16,
    security: Security,
    hello: ClientId,
    credentials: Option<Credentials>,
    /// PEM certificates of private CAs trusted besides the web's roots.
    extra_roots: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// The relay `config` names, read with queues.toml.
    pub fn new(config: &SmtpRelay) -> Relay {
        Relay {
            host: config.host.clone(),
            port: config.port,
            security: config.security,
            hello: config
                .hello
                .clone()
                .map_or_else(ClientId::default, ClientId::Domain),
            credentials: config
                .credentials
                .as_ref()
                .map(|(user, password)| Credentials::new(user.clone(), password.clone())),
            extra_roots: None,
        }
    }

    /// The relay, its certificate also trusted when it chains to one of
    /// the CA certificates in `pem`.
    pub fn trusting(mut self, pem: &[u8]) -> Relay {
        self.extra_roots = Some(pem.into());
        self
    }

    /// TLS with the relay, its certificate checked against the web's roots
    /// (and the extra ones) and its name against the URL's host.
    fn tls(&self) -> Result<TlsParameters, SmtpError> {
        let mut tls = TlsParameters::builder(self.host.clone());
        if let Some(pem) = &self.extra_roots {
            tls = tls.add_root_certificate(Certificate::from_pem(pem)?);
        }
        tls.build()
    }

    /// A connection ready to send: connected, secured, greeted, logged in.
    pub async fn connect(&self) -> Result<AsyncSmtpConnection, RelayError> {
        self.open()
            .await
            .map_err(|e| RelayError::Setup(e.to_string()))
    }

    async fn open(&self) -> Result<AsyncSmtpConnection, Box<dyn std::error::Error>> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let mut connection = match self.security {
            Security::Implicit => {
                let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                stream.upgrade_tls(self.tls()?).await?;
                let stream = TlsStream(stream.compat());
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?
            }
            _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?,
        };
        if let Security::StartTls { required } = self.security
            && (required || connection.can_starttls())
        {
            connection.starttls(self.tls()?, &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(connection)
    }
}

/// A TLS stream as lettre takes a stream of our making.
#[derive(Debug)]
struct TlsStream(Compat<AsyncNetworkStream>);

impl tokio::io::AsyncRead for TlsStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}

/// Makes and checks the pool's connections.
#[derive(Debug)]
pub struct Manager {
    relay: Arc<Relay>,
}

/// A connection idle longer than this is closed rather than reused (relays
/// close idle sessions after a few minutes).
const MAX_IDLE: Duration = Duration::from_secs(60);

impl managed::Manager for Manager {
    type Type = AsyncSmtpConnection;
    type Error = RelayError;

    async fn create(&self) -> Result<AsyncSmtpConnection, RelayError> {
        self.relay.connect().await
    }

    async fn recycle(
        &self,
        connection: &mut AsyncSmtpConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RelayError> {
        if connection.has_broken() {
            return Err(RecycleError::message("the connection failed"));
        }
        if metrics.last_used() > MAX_IDLE {
            connection.abort().await;
            return Err(RecycleError::message("idle too long"));
        }
        if !connection.test_connected().await {
            return Err(RecycleError::message("the relay closed the connection"));
        }
        Ok(())
    }
}

pub type Pool = managed::Pool<Manager>;

/// A pool of at most `size` connections to `relay`.
pub fn pool(relay: Relay, size: u32) -> Result<Pool, managed::BuildError> {
    Pool::builder(Manager {
        relay: Arc::new(relay),
    })
    .max_size(size as usize)
    .build()
}

/// A pooled connection that goes back to the pool only when
/// [`Lease::release`]d: dropped mid-command (a timeout), it is closed.
pub struct Lease(Option<Object<Manager>>);

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

impl Lease {
    pub fn new(connection: Object<Manager>) -> Self {
        Lease(Some(connection))
    }

    pub fn connection(&mut self) -> &mut AsyncSmtpConnection {
        self.0.as_mut().expect("held until released")
    }

    /// Back to the pool.
    pub fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            // Out of the pool, and closed when dropped.
            let _ = Object::take(connection);
        }
    }
}
