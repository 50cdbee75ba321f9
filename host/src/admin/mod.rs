//! What operators see: counters of what each queue did, and the status of
//! every stream read from Redis.

pub mod dashboard;
pub mod dead;
pub mod listen;
pub mod metrics;
pub mod server;
pub mod status;
