//! The Redis client layer: connections and their failures, the bounded
//! reader of stream replies, replies read into the host's types, and the
//! Lua scripts of every atomic step.

pub mod bounded;
pub mod conn;
pub mod read;
pub mod reply;
pub mod scripts;

pub use conn::{
    Backoff, Doing, Health, RedisFailure, StreamError, StreamResult, URL_FORM, client,
    connect_patiently, describe, shared,
};
