//! The admin server's connections: accepted, bounded in number and in
//! time, served over HTTP/1.1 (or HTTPS), on a runtime of their own.
//!
//! Whatever a client does, the admin server must not take what the message
//! path needs:
//!
//! - it runs on its own single-threaded runtime, on its own thread: a
//!   flood of requests competes for one core's share, never for the
//!   runtime that reads, hands off and settles messages;
//! - it holds at most [`MAX_CONNECTIONS`] connections (file descriptors).
//!   At the cap, a new connection takes the place of the one that has
//!   waited longest without a request in progress (a half-sent request, an
//!   idle keep-alive), so a client that opens connections and sends
//!   nothing cannot keep a probe out;
//! - a request's head must arrive within [`HEADER_TIMEOUT`] (also between
//!   requests on a kept-alive connection), a request must be answered
//!   within [`REQUEST_TIMEOUT`], and a connection on which nothing moves
//!   for [`IDLE_TIMEOUT`] (a client that stopped reading its answer) is
//!   closed;
//! - a TLS handshake must finish within [`HANDSHAKE_TIMEOUT`];
//! - requests begin at most [`MAX_RATE`] a second (after a burst), in
//!   the order they arrive: a client sending as fast as it is answered
//!   takes a bounded share of the CPU, and a probe waits its turn behind
//!   it rather than being refused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Connections held at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client has to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take, from its head to its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may go without a byte read or written.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body read (actions carry a list of ids).
pub const MAX_BODY: usize = 1 << 20;
/// Requests begun per second at most, over every connection, after a
/// burst of [`BURST`]: a client that sends as fast as it is answered gets
/// this many, and so takes a bounded share of the host's CPU (a scrape or
/// a dashboard refresh is a handful of requests).
pub const MAX_RATE: u32 = 200;
pub const BURST: u32 = 50;

/// The admin server, running on its own thread until dropped or `stop`
/// fires. Once stopped it accepts nothing more, and its thread ends when
/// the requests under way are answered (at most [`REQUEST_TIMEOUT`]).
#[derive(Debug)]
pub struct AdminServer {
    stop: CancellationToken,
    _thread: std::thread::JoinHandle<()>,
}

impl AdminServer {
    /// Serves `app` on `listener` (HTTPS with `tls`) on a runtime of its
    /// own.
    pub fn start(
        listener: std::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        app: axum::Router,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let token = stop.clone();
        let thread = std::thread::Builder::new()
            .name("switchyard-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, tls, app, token).await,
                        Err(e) => {
                            tracing::error!(error = %e, "The admin server cannot listen.");
                        }
                    }
                });
                // Connections still open are dropped with the runtime.
                runtime.shutdown_background();
            })?;
        Ok(AdminServer {
            stop,
            _thread: thread,
        })
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Paces requests (GCRA): each may begin once its turn, `1 / MAX_RATE`
/// after the last one's, is at most `BURST` turns ahead of now. Turns are
/// taken in arrival order.
#[derive(Debug)]
struct Pace {
    /// When the next request's turn is (the theoretical arrival time).
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pace {
    fn new() -> Self {
        Pace {
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn turn(&self) {
        let interval = Duration::from_secs(1) / MAX_RATE;
        let mut next = self.next.lock().await;
        let now = tokio::time::Instant::now();
        let turn = (*next).max(now);
        *next = turn + interval;
        let ahead = interval * BURST;
        if turn > now + ahead {
            tokio::time::sleep_until(turn - ahead).await;
        }
    }
}

/// One open connection, as the cap sees it.
#[derive(Debug)]
struct Open {
    /// Since when it has had no request in progress (ms since `start`).
    waiting_since: AtomicU64,
    handling: AtomicBool,
    close: CancellationToken,
}

/// The open connections.
#[derive(Debug, Default)]
struct Connections {
    open: Mutex<HashMap<u64, Arc<Open>>>,
    next: AtomicU64,
}

impl Connections {
    /// Registers a new connection, making room at the cap by closing the
    /// one waiting longest; `None` when every one has a request under way.
    fn admit(&self, now: u64) -> Option<(u64, Arc<Open>)> {
        let mut open = self.open.lock().expect("connections lock");
        if open.len() >= MAX_CONNECTIONS {
            let oldest = open
                .iter()
                .filter(|(_, c)| !c.handling.load(Ordering::Relaxed))
                .min_by_key(|(_, c)| c.waiting_since.load(Ordering::Relaxed))
                .map(|(id, _)| *id)?;
            if let Some(evicted) = open.remove(&oldest) {
                evicted.close.cancel();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Open {
            waiting_since: AtomicU64::new(now),
            handling: AtomicBool::new(false),
            close: CancellationToken::new(),
        });
        open.insert(id, conn.clone());
        Some((id, conn))
    }

    fn remove(&self, id: u64) {
        self.open.lock().expect("connections lock").remove(&id);
    }
}

/// What every connection of the server shares.
struct Shared {
    app: axum::Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    clock: Clock,
    pace: Pace,
    connections: Connections,
    stop: CancellationToken,
}

async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    stop: CancellationToken,
) {
    let shared = Arc::new(Shared {
        app,
        acceptor: tls.map(tokio_rustls::TlsAcceptor::from),
        clock: Clock(Instant::now()),
        pace: Pace::new(),
        connections: Connections::default(),
        stop: stop.clone(),
    });
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to be
                // freed rather than spin.
                tracing::warn!(error = %e, "The admin server cannot accept a connection.");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Some((id, open)) = shared.connections.admit(shared.clock.now()) else {
            tracing::debug!(%peer, "Every admin connection has a request under way; refusing one.");
            drop(tcp);
            continue;
        };
        let shared = shared.clone();
        tasks.spawn(async move {
            let close = open.close.clone();
            tokio::select! {
                () = close.cancelled() => {}
                () = connection(tcp, peer, open, &shared) => {}
            }
            shared.connections.remove(id);
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, tasks.wait()).await;
}

/// Serves one connection until it closes, times out or is let go.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    open: Arc<Open>,
    shared: &Arc<Shared>,
) {
    let clock = shared.clock;
    let activity = Arc::new(AtomicU64::new(clock.now()));
    let io = match &shared.acceptor {
        None => Io::Plain(tcp),
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Io::Tls(Box::new(tls)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "An admin client's TLS handshake failed.");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "An admin client did not finish its TLS handshake in time.");
                    return;
                }
            }
        }
    };
    let io = Tracked {
        io,
        activity: activity.clone(),
        clock,
    };
    let service = {
        let (open, shared) = (open.clone(), shared.clone());
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let (open, shared) = (open.clone(), shared.clone());
            async move {
                open.handling.store(true, Ordering::Relaxed);
                shared.pace.turn().await;
                let mut app = shared.app.clone();
                let request = request.map(|body| {
                    axum::body::Body::new(http_body_util::Limited::new(body, MAX_BODY))
                });
                let answer = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    tower_service::Service::call(&mut app, request),
                )
                .await;
                open.waiting_since.store(clock.now(), Ordering::Relaxed);
                open.handling.store(false, Ordering::Relaxed);
                match answer {
                    Ok(Ok(response)) => Ok::<_, std::convert::Infallible>(response),
                    Ok(Err(never)) => match never {},
                    Err(_) => Ok(axum::response::IntoResponse::into_response((
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "the request took too long\n",
                    ))),
                }
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_headers(64)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "An admin connection ended with an error.");
                }
                return;
            }
            () = shared.stop.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                let idle = clock.now().saturating_sub(activity.load(Ordering::Relaxed));
                if Duration::from_millis(idle) > IDLE_TIMEOUT {
                    tracing::debug!(%peer, "Closing an admin connection on which nothing moved.");
                    return;
                }
            }
        }
    }
}

/// A plain or TLS connection.
enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// Milliseconds since the server started.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// A connection that notes when a byte last moved.
struct Tracked {
    io: Io,
    activity: Arc<AtomicU64>,
    clock: Clock,
}

impl Tracked {
    fn moved(&self) {
        self.activity.store(self.clock.now(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if buf.filled().len() > before {
            this.moved();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_begin_at_most_max_rate_a_second_after_a_burst() {
        let pace = Pace::new();
        let started = tokio::time::Instant::now();
        for _ in 0..BURST {
            pace.turn().await;
        }
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "the burst waits for nothing"
        );
        for _ in 0..MAX_RATE {
            pace.turn().await;
        }
        let took = started.elapsed();
        let second = Duration::from_secs(1);
        assert!(took >= second - second / 4 && took <= second, "{took:?}");
        // Idle, the burst is available again.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let again = tokio::time::Instant::now();
        for _ in 0..BURST {
            pace.turn().await;
        }
        assert_eq!(again.elapsed(), Duration::ZERO);
    }

    #[test]
    fn at_the_cap_the_connection_waiting_longest_makes_room() {
        let c = Connections::default();
        let mut admitted = Vec::new();
        for t in 0..MAX_CONNECTIONS as u64 {
            admitted.push(c.admit(t).unwrap());
        }
        // The oldest has a request under way: the next oldest goes.
        admitted[0].1.handling.store(true, Ordering::Relaxed);
        let (_, newest) = c.admit(1000).unwrap();
        assert!(!admitted[0].1.close.is_cancelled());
        assert!(admitted[1].1.close.is_cancelled());
        assert!(!newest.close.is_cancelled());
        assert_eq!(c.open.lock().unwrap().len(), MAX_CONNECTIONS);
        // Every one busy: no room.
        for (_, open) in &admitted {
            open.handling.store(true, Ordering::Relaxed);
        }
        newest.handling.store(true, Ordering::Relaxed);
        assert!(c.admit(2000).is_none());
    }
}
