//! Outbound HTTP for plugins: `wasi:http/outgoing-handler`, implemented by
//! wasmtime-wasi-http, with the host's own request sender.
//!
//! Every request a plugin sends goes through [`CallHttp::send_request`]:
//!
//! - its URL is checked against the queue's `allowed_hosts` (a request to
//!   anywhere else fails inside the plugin with the standard
//!   `HTTP-request-denied`, and the host logs and counts it);
//! - the call may send at most `max_requests_per_call` requests, and the
//!   queue at most `max_connections_per_host` to one destination at once;
//! - the request, response body included, must finish within
//!   `http_timeout` and the handler's deadline, whichever comes first, and
//!   the body may be at most `max_response_kib`;
//! - it goes out on the queue's pooled client, which keeps connections
//!   alive across messages and instances, per destination. The client's
//!   connector is the one place a connection is made: it resolves the
//!   host, checks every address against the grant (a non-public address
//!   only for a host the grant names exactly), and connects to an address
//!   it checked, never resolving again. Redirects are not followed: a
//!   plugin that follows one sends a new request, checked again.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use crate::admin::metrics::QueueMetrics;
use crate::config::{CaFile, HttpSettings};
use crate::grants::{Denied, Destination, HttpGrant, RequestHost};
use crate::secrets::Secrets;

/// How long idle pooled connections are kept.
const IDLE: Duration = Duration::from_secs(60);

/// The TLS configuration for https destinations: the web's root
/// certificates, HTTP/1.1.
static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let mut config =
        crate::tls::client_config(None).expect("ring supports the default protocol versions");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
});

/// [`TLS`], also trusting the certificates in `ca_file`.
fn tls_trusting(ca_file: &CaFile) -> Arc<rustls::ClientConfig> {
    let mut config = crate::tls::client_config(Some(ca_file))
        .expect("CaFile::read checked that every certificate is a valid root");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A plain or TLS connection.
enum Stream {
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
    grant: Arc<HttpGrant>,
    connect_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
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
async fn secure(
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

/// One queue's outbound HTTP: its settings, its pooled client, and how many
/// requests are in flight to each destination.
pub struct QueueHttp {
    queue: Arc<str>,
    settings: HttpSettings,
    client: Client<GuardedConnector, WasiBody>,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Masked in what the host logs of a plugin's requests.
    secrets: Arc<Secrets>,
    metrics: Arc<QueueMetrics>,
}

impl std::fmt::Debug for QueueHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueHttp")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl QueueHttp {
    pub fn new(
        queue: &str,
        settings: HttpSettings,
        secrets: Arc<Secrets>,
        metrics: Arc<QueueMetrics>,
    ) -> Self {
        let connector = GuardedConnector {
            grant: Arc::new(settings.grant.clone()),
            connect_timeout: settings.timeout,
            tls: settings
                .ca_file
                .as_ref()
                .map_or_else(|| TLS.clone(), tls_trusting),
        };
        let idle = if settings.keep_alive {
            settings.max_connections_per_host as usize
        } else {
            0
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(idle)
            .build(connector);
        QueueHttp {
            queue: queue.into(),
            settings,
            client,
            in_flight: Mutex::new(HashMap::new()),
            secrets,
            metrics,
        }
    }

    fn slots(&self, dest: &str) -> Arc<Semaphore> {
        self.in_flight
            .lock()
            .expect("http lock")
            .entry(dest.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.settings.max_connections_per_host as usize,
                ))
            })
            .clone()
    }

    fn denied(&self, destination: &str, reason: &str) -> wasmtime_wasi_http::Error {
        QueueMetrics::add(&self.metrics.http_denied);
        let secrets = &self.secrets;
        tracing::warn!(queue = %self.queue, destination = %secrets.mask(destination), reason = %secrets.mask(reason), "Outbound HTTP request denied.");
        wasmtime_wasi_http::Error::HttpRequestDenied
    }

    /// Sends one request of a call that has sent `sent` so far (this one
    /// included) and must end by `deadline`: checked against the grant and
    /// the limits, on the queue's pooled client. The answer's body is bounded
    /// in size and time.
    pub async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        sent: u32,
        deadline: Instant,
        scope: Option<Arc<CallScope>>,
    ) -> wasmtime_wasi_http::Result<http::Response<WasiBody>> {
        let uri = request.uri().clone();
        let shown = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("?"),
            uri.host().unwrap_or("?"),
            uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default()
        );
        if sent > self.settings.max_requests {
            return Err(self.denied(
                &shown,
                &format!(
                    "the call sent more than max_requests_per_call ({}) requests",
                    self.settings.max_requests
                ),
            ));
        }
        let dest = self
            .settings
            .grant
            .check(
                uri.scheme_str().unwrap_or(""),
                uri.host().unwrap_or(""),
                uri.port_u16(),
            )
            .map_err(|e| self.denied(&shown, &e.to_string()))?;
        QueueMetrics::add(&self.metrics.http_requests);
        let budget = self
            .settings
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let deadline = tokio::time::Instant::now() + budget;
        let slots = self.slots(&dest.to_string());
        let permit = tokio::time::timeout_at(deadline, slots.acquire_owned())
            .await
            .map_err(|_| wasmtime_wasi_http::Error::ConnectionLimitReached)?
            .expect("the semaphore is never closed");
        let started = Instant::now();
        let request = self.client.request(request);
        let response = match &scope {
            // A request the call left behind ends with the call.
            Some(scope) => tokio::select! {
                r = tokio::time::timeout_at(deadline, request) => r,
                () = scope.ended.cancelled() => {
                    return Err(wasmtime_wasi_http::Error::InternalError(Some(
                        "the call that sent this request has ended".into(),
                    )));
                }
            },
            None => tokio::time::timeout_at(deadline, request).await,
        };
        // Until the answer's head, or the failure.
        self.metrics.timed(0, started);
        let response = response
            .map_err(|_| wasmtime_wasi_http::Error::ConnectionReadTimeout)?
            .map_err(|e| client_error(&self, &shown, e))?;
        let (parts, body) = response.into_parts();
        let max = self.settings.max_response_bytes;
        let open = Arc::new(Mutex::new(Some(OpenBody {
            body,
            _permit: permit,
        })));
        if let Some(scope) = &scope {
            scope.opened(&open);
        }
        Ok(http::Response::from_parts(
            parts,
            Guarded {
                open,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                read: 0,
                max,
            }
            .boxed_unsync(),
        ))
    }
}

/// What one call of a plugin has open over HTTP. With `reuse_instances`,
/// an instance keeps its resources between calls (a response body it did
/// not read, a request it never awaited); when the call ends they are
/// closed here, so that nothing one call opened holds a connection, or its
/// destination's slot, into the next.
#[derive(Debug, Default)]
pub struct CallScope {
    /// Cancels the requests still under way.
    ended: tokio_util::sync::CancellationToken,
    bodies: Mutex<Vec<std::sync::Weak<Mutex<Option<OpenBody>>>>>,
}

impl CallScope {
    fn opened(&self, body: &Arc<Mutex<Option<OpenBody>>>) {
        let mut bodies = self.bodies.lock().expect("scope lock");
        bodies.retain(|b| b.strong_count() > 0);
        bodies.push(Arc::downgrade(body));
    }

    /// Ends every request the call has under way and closes every
    /// response body it left open.
    pub fn end(&self) {
        self.ended.cancel();
        for body in self.bodies.lock().expect("scope lock").drain(..) {
            if let Some(body) = body.upgrade() {
                body.lock().expect("body lock").take();
            }
        }
    }
}

/// A response body still open, with its destination's slot.
struct OpenBody {
    body: hyper::body::Incoming,
    _permit: OwnedSemaphorePermit,
}

/// The HTTP side of one handler call.
pub struct CallHttp {
    pub queue: Arc<QueueHttp>,
    /// The handler's deadline: no request outlives it.
    pub deadline: Instant,
    /// Requests this call has sent.
    pub sent: u32,
    /// The handling's `traceparent`, added to requests that carry none.
    pub traceparent: Option<String>,
    /// What the call has open, closed when it ends.
    pub scope: Arc<CallScope>,
}

impl std::fmt::Debug for CallHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHttp")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for CallHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        drop(fut);
        self.sent += 1;
        let mut request = request;
        if let Some(trace) = &self.traceparent
            && !request.headers().contains_key("traceparent")
            && let Ok(value) = http::HeaderValue::from_str(trace)
        {
            request.headers_mut().insert("traceparent", value);
        }
        let send =
            self.queue
                .clone()
                .send(request, self.sent, self.deadline, Some(self.scope.clone()));
        Box::new(async move {
            Ok((
                send.await?,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// What a failed request tells the plugin. A refusal by the connector (an
/// address that is not allowed) is `HTTP-request-denied`, logged and
/// counted like the others.
/// The `wasi:http` error for a failed handshake: the certificate, an
/// alert the server sent, or the protocol.
fn tls_error(error: &std::io::Error) -> wasmtime_wasi_http::Error {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            wasmtime_wasi_http::Error::TlsCertificateError
        }
        Some(rustls::Error::AlertReceived(alert)) => wasmtime_wasi_http::Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        _ => wasmtime_wasi_http::Error::TlsProtocolError,
    }
}

fn client_error(
    queue: &QueueHttp,
    shown: &str,
    e: hyper_util::client::legacy::Error,
) -> wasmtime_wasi_http::Error {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return match c {
                ConnectError::Denied(d) => queue.denied(shown, &d.to_string()),
                ConnectError::Dns { .. } => wasmtime_wasi_http::Error::DnsError {
                    rcode: None,
                    info_code: None,
                },
                ConnectError::Timeout(_) => wasmtime_wasi_http::Error::ConnectionTimeout,
                ConnectError::Connect { error, .. }
                    if error.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    wasmtime_wasi_http::Error::ConnectionRefused
                }
                ConnectError::Connect { .. } => wasmtime_wasi_http::Error::DestinationUnavailable,
                ConnectError::Tls { error, .. } => tls_error(error),
            };
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            return if h.is_incomplete_message() || h.is_closed() {
                wasmtime_wasi_http::Error::ConnectionTerminated
            } else {
                wasmtime_wasi_http::Error::HttpProtocolError
            };
        }
        source = s.source();
    }
    wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
}

/// A response body bounded in size and in time, holding its destination's
/// slot until it is read, dropped, or closed with its call.
struct Guarded {
    open: Arc<Mutex<Option<OpenBody>>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    read: usize,
    max: usize,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
        }
        let mut open = this.open.lock().expect("body lock");
        let Some(open) = open.as_mut() else {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                "the call that received this response has ended".into(),
            )))));
        };
        match Pin::new(&mut open.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len();
                    if this.read > this.max {
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpResponseBodySize(Some(this.max as u64)),
                        )));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(wasmtime_wasi_http::Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.open
            .lock()
            .expect("body lock")
            .as_ref()
            .is_none_or(|o| o.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.open
            .lock()
            .expect("body lock")
            .as_ref()
            .map_or_else(SizeHint::default, |o| o.body.size_hint())
    }
}
