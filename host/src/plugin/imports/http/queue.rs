//! One queue's outbound HTTP: its pooled client, the limits of its
//! requests, the bodies of its answers, and what each call has open.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::WasiBody;

use super::*;
use crate::config::HttpSettings;
use crate::kinds::Capability;
use crate::metrics::QueueMetrics;
use crate::secrets::Secrets;

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
    /// `switchyard invoke`: every request recorded, and perhaps answered
    /// from canned answers instead of sent.
    observed: Option<(Arc<Observed>, Option<Arc<Canned>>)>,
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
            observed: None,
        }
    }

    /// The same, every request recorded in `observed`, and answered from
    /// `canned` (if given) instead of sent: for `switchyard invoke`.
    pub fn observed(mut self, observed: Arc<Observed>, canned: Option<Arc<Canned>>) -> Self {
        self.observed = Some((observed, canned));
        self
    }

    pub(super) fn slots(&self, dest: &str) -> Arc<Semaphore> {
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

    pub(super) fn denied(&self, destination: &str, reason: &str) -> wasmtime_wasi_http::Error {
        let secrets = &self.secrets;
        let detail = format!("{}: {}", secrets.mask(destination), secrets.mask(reason));
        crate::events::denied(&self.metrics, &self.queue, Capability::Http, &detail);
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
        let Some((observed, canned)) = self.observed.clone() else {
            return self
                .send_checked(request, sent, deadline, scope, None)
                .await;
        };
        let (method, url) = (request.method().to_string(), request.uri().to_string());
        let sent = self
            .send_checked(request, sent, deadline, scope, canned.as_deref())
            .await;
        observed.record(SeenRequest {
            method,
            url,
            status: sent.as_ref().ok().map(|r| r.status().as_u16()),
            error: sent.as_ref().err().map(|e| format!("{e:?}")),
        });
        sent
    }

    /// [`QueueHttp::send`], answered from `canned` when given.
    async fn send_checked(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        sent: u32,
        deadline: Instant,
        scope: Option<Arc<CallScope>>,
        canned: Option<&Canned>,
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
        if let Some(canned) = canned {
            return canned
                .answer(request.method().as_str(), &uri.to_string())
                .ok_or(wasmtime_wasi_http::Error::ConnectionRefused);
        }
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
        self.metrics.timed(Capability::Http, started);
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
pub(super) struct OpenBody {
    pub(super) body: hyper::body::Incoming,
    pub(super) _permit: OwnedSemaphorePermit,
}

/// A response body bounded in size and in time, holding its destination's
/// slot until it is read, dropped, or closed with its call.
pub(super) struct Guarded {
    pub(super) open: Arc<Mutex<Option<OpenBody>>>,
    pub(super) deadline: Pin<Box<tokio::time::Sleep>>,
    pub(super) read: usize,
    pub(super) max: usize,
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
