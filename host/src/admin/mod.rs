//! What operators see: the admin HTTP server (`[admin]` in queues.toml; off
//! without it) with its probes, metrics and dashboard; dead-letter
//! inspection and replay; the status of every stream read from Redis.
//!
//! - `GET /metrics` ([`exposition`]), `GET /healthz` and `GET /readyz`
//!   ([`health`]): open to any client on the listening address;
//! - the dashboard and its API ([`dashboard`]), its charts' samples
//!   ([`history`], [`sampler`]), its actions on dead letters (`actions`): behind the
//!   Host check and a token.
//!
//! With `tls_cert` and `tls_key` it serves HTTPS only. Connections are
//! bounded in number and time, on a runtime of their own ([`listen`]).

mod actions;
mod api;
pub mod dashboard;
pub mod dead;
pub mod exposition;
pub mod health;
pub mod history;
pub mod listen;
pub mod sampler;
pub mod state;
pub mod status;

use std::sync::Arc;

use axum::routing::get;

pub use state::{AdminState, Stats};

/// The admin server's routes: the probes and metrics, open to any client
/// on the listening address; the dashboard and its API, behind the Host
/// check and a token (see [`dashboard`]).
pub fn router(state: Arc<AdminState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(exposition::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(dashboard::routes(state.clone()))
        .with_state(state)
}
