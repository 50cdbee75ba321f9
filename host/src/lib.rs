//! Switchyard runs message handlers, shipped as WebAssembly components, on
//! Redis Streams. A chat server XADDs events to an ingress stream; the router
//! fans each one out, by message type, to the queues `queues.toml` names; each
//! queue's workers run its plugin on every message and ack it, retry it, or
//! move it to the dead-letter stream with the reason.
//!
//! # Layout
//!
//! - [`config`]: the strict model of queues.toml, with complete validation.
//! - [`grants`]: what a queue's plugin may reach (HTTP destinations) and the checks.
//! - [`message`]: a stream entry read into a message (type, body, id, headers).
//! - [`router`]: pure routing decisions: message type to target queues.
//! - [`stream`]: Redis Streams: key layout, groups, the router loop, queue settlement.
//! - [`plugin`]: wasmtime: the engine, the WIT bindings, host imports, one call.
//! - [`queue`]: per-queue workers: concurrency, outcome to ack / retry / dead letter.
//! - [`supervisor`]: start-up, the tasks, reloads of plugins and queues.toml, draining on shutdown.
//! - [`watch`]: watching queues.toml and plugin files (and symlink targets), debounced.
//! - [`telemetry`]: spans continuing the producer's trace, exported over OTLP.
//! - [`text`]: text from outside bounded and escaped, and the log format that enforces it.
//! - [`secrets`]: every form of a queue's secrets masked in what plugins hand back.
//! - [`admin`]: counters and the status of every stream.
//! - [`demo`]: the local end-to-end demo.
//! - [`cli`]: the command line.
//! - [`redis`]: connections and their failures, the bounded reader, replies, the Lua scripts.
//! - [`shutdown`], [`failpoint`]: signals, test crash points.
//! - [`files`]: files an operator names, read with a bound.

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
pub mod secrets;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
pub mod text;
pub mod tls;

pub mod watch;
