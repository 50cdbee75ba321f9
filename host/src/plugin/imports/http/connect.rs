//! The one place a plugin's HTTP connection is made: the destination and
//! every address its name resolves to checked against the grant, then a
//! connection to an address that was checked (TLS verified for https).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::CaFile;
use crate::grants::{Denied, Destination, HttpGrant, RequestHost};

/// How long idle pooled connections are kept.
pub(super) const IDLE: Duration = Duration::from_secs(60);

/// The TLS configuration for https destinations: the web's root
/// certificates, HTTP/1.1.
pub(super) static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let mut config =
        crate::tls::client_config(None).expect("ring supports the default protocol versions");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
});

/// [`TLS`], also trusting the certificates in `ca_file`.
pub(super) fn tls_trusting(ca_file: &CaFile) -> Arc<rustls::ClientConfig> {
    let mut config = crate::tls::client_config(Some(ca_file))
        .expect("CaFile::read checked that every certificate is a valid root");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A plain or TLS connection.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection the pool keeps.
pub struct Conn(TokioIo<Stream>);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Why the connector did not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("resolving {host}: {error}")]
    Dns { host: String, error: std::io::Error },
    #[error("connecting to {dest}: {error}")]
    Connect { dest: String, error: std::io::Error },
    #[error("connecting to {0}: timed out")]
    Timeout(String),
    #[error("TLS with {dest}: {error}")]
    Tls { dest: String, error: std::io::Error },
}

/// Makes every connection of a queue's client: checks the destination and
/// the addresses it resolves to against the grant, and connects to one it
/// checked.
#[derive(Debug, Clone)]
pub struct GuardedConnector {
    pub(super) grant: Arc<HttpGrant>,
    pub(super) connect_timeout: Duration,
    pub(super) tls: Arc<rustls::ClientConfig>,
}

impl tower_service::Service<http::Uri> for GuardedConnector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (grant, timeout, tls) = (self.grant.clone(), self.connect_timeout, self.tls.clone());
        Box::pin(async move {
            let dest = grant.check(
                uri.scheme_str().unwrap_or(""),
                uri.host().unwrap_or(""),
                uri.port_u16(),
            )?;
            let addrs: Vec<SocketAddr> = match &dest.host {
                RequestHost::Ip(ip) => vec![SocketAddr::new(*ip, dest.port)],
                RequestHost::Name(name) => tokio::time::timeout(
                    timeout,
                    tokio::net::lookup_host((name.as_str(), dest.port)),
                )
                .await
                .map_err(|_| ConnectError::Timeout(dest.to_string()))?
                .map_err(|error| ConnectError::Dns {
                    host: name.clone(),
                    error,
                })?
                .collect(),
            };
            // Every address must pass: a name that resolves to one public
            // and one private address is refused, not tried in turn.
            let checked = addrs
                .iter()
                .map(|a| {
                    dest.check_address(a.ip())
                        .map(|ip| SocketAddr::new(ip, a.port()))
                })
                .collect::<Result<Vec<_>, Denied>>()?;
            let mut last = None;
            for addr in checked {
                match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(tcp)) => {
                        let _ = tcp.set_nodelay(true);
                        return secure(&dest, tcp, tls).await;
                    }
                    Ok(Err(error)) => {
                        last = Some(ConnectError::Connect {
                            dest: format!("{dest} ({addr})"),
                            error,
                        })
                    }
                    Err(_) => last = Some(ConnectError::Timeout(format!("{dest} ({addr})"))),
                }
            }
            Err(last.unwrap_or(ConnectError::Dns {
                host: dest.host.to_string(),
                error: std::io::ErrorKind::NotFound.into(),
            }))
        })
    }
}

/// TLS over `tcp` for an https destination.
pub(super) async fn secure(
    dest: &Destination,
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
) -> Result<Conn, ConnectError> {
    if dest.scheme == crate::grants::Scheme::Http {
        return Ok(Conn(TokioIo::new(Stream::Plain(tcp))));
    }
    let name = match &dest.host {
        RequestHost::Name(n) => rustls::pki_types::ServerName::try_from(n.clone()),
        RequestHost::Ip(ip) => Ok(rustls::pki_types::ServerName::IpAddress((*ip).into())),
    }
    .map_err(|e| ConnectError::Tls {
        dest: dest.to_string(),
        error: std::io::Error::other(e.to_string()),
    })?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|error| ConnectError::Tls {
            dest: dest.to_string(),
            error,
        })?;
    Ok(Conn(TokioIo::new(Stream::Tls(Box::new(tls)))))
}
