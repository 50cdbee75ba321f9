//! The HTTP side of one handler call: `wasi:http`'s request hook, and
//! what a failed request tells the plugin.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use super::*;

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
pub(super) fn tls_error(error: &std::io::Error) -> wasmtime_wasi_http::Error {
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

pub(super) fn client_error(
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
