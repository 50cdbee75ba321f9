//! Switchyard runs message handlers, shipped as WebAssembly components, on
//! Redis Streams. A chat server XADDs events to an ingress stream; the router
//! fans each one out, by message type, to the queues `queues.toml` names; each
//! queue's workers run its plugin on every message and ack it, retry it, or
//! move it to the dead-letter stream with the reason.
//!
//! # Layout
//!
//! From the bottom up; a module uses only those above it in this list (a
//! doc link aside), so there is no import circle. The binary and the
//! local demo are the `switchyard-cli` package's.
//!
//! - [`text`]: text from outside bounded and escaped; the log format that enforces it.
//! - [`files`]: files an operator names, read with a bound.
//! - [`shutdown`], [`failpoint`]: signals; named crash points for the tests.
//! - [`message`]: a stream entry read into a message; the follow-ups a call publishes.
//! - [`reason`]: why a message is dead-lettered, its text and its metric class.
//! - [`kinds`]: the fixed kinds that label metrics and logs (failures, capabilities).
//! - [`grants`]: what a queue's plugin may reach over HTTP, and the address checks.
//! - [`config`]: queues.toml as a model: parsed, validated (pure), then resolved (files, secrets).
//! - [`metrics`]: the host's counters and histograms.
//! - [`events`]: each happening's log line and metric, written together.
//! - [`secrets`]: every form of a queue's secrets, masked in what plugins hand back.
//! - [`tls`]: server and client TLS configurations from PEM.
//! - [`telemetry`]: logging, and spans continuing the producer's trace over OTLP.
//! - [`redis`]: connections and their health, backoff, the bounded reader, replies, the Lua scripts.
//! - [`router`]: pure routing decisions: an ingress entry to its queues, or a dead letter.
//! - [`schema`]: the embedded chat events schema, which the routes with `validate = true` check bodies against.
//! - [`stream`]: the key layout, groups, the router loop, a queue's stream steps, reclaim scheduling, retention.
//! - [`plugin`]: wasmtime: the engine, loading and compiling, the contract's bindings, the host imports, one call.
//! - [`migrate`]: a queue's SQL migrations applied to its database.
//! - [`queue`]: a queue's runtime and workers: slots, autoscaling, deliveries, settlement, acks.
//! - [`watch`]: queues.toml and plugin files watched (and their symlink targets), debounced.
//! - [`admin`]: the admin server: metrics, health, the dashboard, dead-letter inspection and replay.
//! - [`supervisor`]: preflight, start-up, reloads of plugins and queues.toml, maintenance, draining.

pub mod admin;
pub mod config;
pub mod failpoint;
pub mod files;
pub mod queue;

pub mod events;
pub mod grants;
pub mod kinds;
pub mod message;
pub mod metrics;
pub mod migrate;
pub mod supervisor;

pub mod plugin;
pub mod reason;
pub mod redis;
pub mod router;
pub mod schema;
pub mod secrets;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
pub mod text;
pub mod tls;

pub mod watch;
