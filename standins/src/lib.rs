//! HTTP services that stand in for the remote APIs the shipped plugins
//! call, on a free loopback port each: a webhook receiver that verifies
//! Switchyard's signature, Zendesk's Tickets API, Salesforce's Case upsert,
//! and the chat product's ticket service. Each speaks its API's request
//! shapes, keeps the objects it is asked to create, and records every
//! request it receives, so the demo can show what each received and the
//! tests can check it.
//!
//! A service can speak HTTPS instead ([`StandIn::start_tls`]), with a
//! certificate from a private CA ([`tls::TestCa`]).
//!
//! A test can also make a service misbehave, one request at a time
//! ([`StandIn::push`]): answer a given status, stream a huge body, trickle
//! bytes, redirect, or hold its answer.

mod apis;
pub mod postgres;
pub mod smtp;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use apis::{verify_signature, webhook_signature};

/// Which API a service speaks.
#[derive(Debug, Clone)]
pub enum Api {
    /// Answers `200 {"ok":true}` to any request.
    Echo,
    /// A site's webhook endpoint: takes a POST of any path, verifies the
    /// `Switchyard-Signature` header with `secret`, and keeps each event
    /// once by its `Idempotency-Key`.
    WebHook { secret: String },
    /// Zendesk's Tickets API (`/api/v2/tickets.json`), API-token basic
    /// auth (`<email>/token:<token>`).
    Zendesk { email: String, token: String },
    /// Salesforce's REST API: upsert of a Case by an external id field
    /// (`PATCH /services/data/vNN.0/sobjects/Case/<field>/<value>`),
    /// bearer `token`.
    Salesforce { token: String },
    /// The chat product's ticket service: `POST /api/tickets`, bearer
    /// `token`, one ticket event per `Idempotency-Key`.
    Tickets { token: String },
}

impl Api {
    pub fn name(&self) -> &'static str {
        match self {
            Api::Echo => "echo",
            Api::WebHook { .. } => "webhook receiver",
            Api::Zendesk { .. } => "Zendesk Tickets API",
            Api::Salesforce { .. } => "Salesforce REST API",
            Api::Tickets { .. } => "ticket service",
        }
    }
}

/// One request a service received, and what it answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
    /// Why the API refused the request, if it did.
    pub refused: Option<String>,
    /// Which connection it came on (1, 2, ... in the order accepted).
    pub connection: u64,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A misbehaviour for the next request, instead of (or around) the API's
/// answer.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// This answer instead of the API's.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// A 200 whose body is `bytes` long, streamed.
    Huge { bytes: u64 },
    /// A 200 whose body comes one byte per `every`, `bytes` in all.
    Trickle { bytes: u64, every: Duration },
    /// The API's answer, after `delay`.
    Hold { delay: Duration },
}

impl Scripted {
    /// An answer of `status` with an empty JSON body.
    pub fn status(status: u16) -> Self {
        Scripted::Respond {
            status,
            headers: Vec::new(),
            body: "{}".into(),
        }
    }

    /// An answer of `status` with `body`.
    pub fn answer(status: u16, body: &str) -> Self {
        Scripted::Respond {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A redirect to `location`.
    pub fn redirect(status: u16, location: &str) -> Self {
        Self::status(status).with_header("location", location)
    }

    /// The answer with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Scripted::Respond { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

/// The objects an API keeps, by the key that makes creating them
/// idempotent.
#[derive(Debug, Default)]
struct Objects {
    list: Vec<Value>,
    by_key: HashMap<String, usize>,
}

#[derive(Debug)]
struct Shared {
    api: Api,
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Scripted>>,
    objects: Mutex<Objects>,
    connections: AtomicU64,
    arrived: tokio::sync::Notify,
}

type ResponseBody = BoxBody<Bytes, Infallible>;

/// A running service; stopped when dropped.
#[derive(Debug)]
pub struct StandIn {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Starts a service speaking `api` on a free loopback port.
    pub async fn start(api: Api) -> std::io::Result<StandIn> {
        Self::start_on(api, "127.0.0.1:0".parse().expect("an address")).await
    }

    /// Starts a service speaking `api` on `addr`.
    pub async fn start_on(api: Api, addr: SocketAddr) -> std::io::Result<StandIn> {
        Self::start_with(api, addr, None).await
    }

    /// Starts a service speaking `api` over HTTPS on a free loopback port,
    /// presenting `ca`'s certificate (for `localhost` and `127.0.0.1`).
    pub async fn start_tls(api: Api, ca: &tls::TestCa) -> std::io::Result<StandIn> {
        let addr = "127.0.0.1:0".parse().expect("an address");
        Self::start_with(api, addr, Some(ca.server_config())).await
    }

    async fn start_with(
        api: Api,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            api,
            requests: Mutex::default(),
            script: Mutex::default(),
            objects: Mutex::default(),
            connections: AtomicU64::new(0),
            arrived: tokio::sync::Notify::new(),
        });
        let serving = shared.clone();
        let acceptor = tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            // The connections are the accept loop's: aborting it stops them.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let number = serving.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let shared = serving.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.handle(number, request).await) }
                    });
                    let http = http1::Builder::new();
                    let _ = match acceptor {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => http.serve_connection(TokioIo::new(tls), service).await,
                            Err(_) => return,
                        },
                        None => http.serve_connection(TokioIo::new(tcp), service).await,
                    };
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(StandIn {
            addr,
            tls: tls.is_some(),
            shared,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, or `https://` for a service started with
    /// [`StandIn::start_tls`].
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn api(&self) -> &Api {
        &self.shared.api
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// The objects the API keeps (tickets, cases, events), in the order
    /// they were created.
    pub fn objects(&self) -> Vec<Value> {
        self.shared.objects.lock().expect("lock").list.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Queues a misbehaviour for the next request not yet scripted.
    pub fn push(&self, scripted: Scripted) {
        self.shared.script.lock().expect("lock").push_back(scripted);
    }

    /// Waits until at least `n` requests have arrived, at most `limit`;
    /// returns how many have.
    pub async fn wait_requests(&self, n: usize, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.shared.arrived.notified();
            let count = self.shared.requests.lock().expect("lock").len();
            if count >= n {
                return count;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.shared.requests.lock().expect("lock").len();
            }
        }
    }

    /// A few lines on what the service received, for the demo.
    pub fn summary(&self) -> String {
        apis::summary(&self.shared.api, &self.requests(), &self.objects())
    }
}

impl Shared {
    async fn handle(
        &self,
        connection: u64,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut recorded = Recorded {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/".into(), |p| p.to_string()),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: 0,
            refused: None,
            connection,
            at: std::time::Instant::now(),
        };
        let scripted = self.script.lock().expect("lock").pop_front();
        let mut delay = None;
        let response = match scripted {
            Some(Scripted::Respond {
                status,
                headers,
                body,
            }) => respond(status, &headers, Bytes::from(body)),
            Some(Scripted::Huge { bytes }) => streamed(bytes, None),
            Some(Scripted::Trickle { bytes, every }) => streamed(bytes, Some(every)),
            Some(Scripted::Hold { delay: d }) => {
                delay = Some(d);
                self.answer(&mut recorded)
            }
            None => self.answer(&mut recorded),
        };
        recorded.status = response.status().as_u16();
        self.requests.lock().expect("lock").push(recorded);
        self.arrived.notify_waiters();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        response
    }

    /// The API's own answer.
    fn answer(&self, recorded: &mut Recorded) -> http::Response<ResponseBody> {
        let mut objects = self.objects.lock().expect("lock");
        let answer = apis::answer(&self.api, recorded, &mut objects);
        recorded.refused = answer.refused;
        respond(
            answer.status,
            &answer.headers,
            Bytes::from(answer.body.to_string()),
        )
    }
}

fn respond(status: u16, headers: &[(String, String)], body: Bytes) -> http::Response<ResponseBody> {
    let mut response = http::Response::builder().status(status);
    let mut typed = false;
    for (k, v) in headers {
        typed |= k.eq_ignore_ascii_case("content-type");
        response = response.header(k, v);
    }
    if !typed {
        response = response.header("content-type", "application/json");
    }
    response
        .body(http_body_util::Full::new(body).boxed())
        .unwrap_or_else(|_| {
            http::Response::new(http_body_util::Full::new(Bytes::from_static(b"{}")).boxed())
        })
}

/// A 200 whose body is `bytes` long, in 64 KiB frames, or one byte per
/// `every`.
fn streamed(bytes: u64, every: Option<Duration>) -> http::Response<ResponseBody> {
    let body = Streamed {
        left: bytes,
        every,
        wait: None,
    };
    http::Response::builder()
        .status(200)
        .header("content-type", "application/octet-stream")
        .body(body.boxed())
        .expect("a valid response")
}

struct Streamed {
    left: u64,
    every: Option<Duration>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let Some(every) = self.every else {
            let n = self.left.min(64 * 1024);
            self.left -= n;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n as usize])))));
        };
        let wait = self
            .wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        match wait.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.wait = None;
                self.left -= 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
            }
        }
    }
}
