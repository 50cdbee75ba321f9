//! Outbound HTTP for plugins: `wasi:http/outgoing-handler`, implemented by
//! wasmtime-wasi-http, with the host's own request sender.
//!
//! Every request a plugin sends goes through `CallHttp::send_request` (the
//! `WasiHttpView` hook):
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

mod call;
mod canned;
mod connect;
mod queue;

pub use call::CallHttp;
pub use canned::{Canned, CannedAnswer, Observed, SeenRequest};
pub use connect::{Conn, ConnectError, GuardedConnector};
pub use queue::{CallScope, QueueHttp};

use call::client_error;
use connect::{IDLE, TLS, tls_trusting};

use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::plugin::HostState;

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.http,
            table: &mut self.table,
            ctx: &mut self.http_ctx,
        }
    }
}
