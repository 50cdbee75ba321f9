//! Per-queue workers: read a queue's messages within its concurrency, run
//! the plugin on each in a fresh instance, and settle the outcome: ack,
//! retry later, or dead-letter.
//!
//! - [`runtime`]: what a queue runs with now (settings, plugin, call context);
//! - [`slots`] and [`autoscale`]: its concurrency, and scaling it;
//! - [`worker`]: the reading loop, new messages and reclaimed ones;
//! - [`delivery`]: one delivery, from the plugin call to its settlement;
//! - [`settlement`]: the pure decision of how a delivery ends;
//! - [`settle`]: the writes to Redis, acks in batches, and leases.

pub mod autoscale;
pub mod delivery;
pub mod runtime;
pub mod settle;
pub mod settlement;
pub mod slots;
pub mod worker;

pub use autoscale::scale;
pub use runtime::{QueueContext, QueueRuntime};
pub use settlement::{Delivered, Settlement, needs_history, settlement};
pub use slots::Slots;
pub use worker::{QueueWorker, WorkerTasks};

use settle::{AckRequest, ack_batches};
use worker::Shared;
