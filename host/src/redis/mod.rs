//! The Redis client layer: where Redis is ([`endpoint`]), the deployment
//! and its shared connection ([`deployment`], [`conn`]), cluster slots
//! ([`slots`]), the bounded reader of stream replies, replies read into
//! the host's types, and the Lua scripts of every atomic step.

pub mod bounded;
pub mod conn;
pub mod deployment;
pub mod endpoint;
pub mod read;
pub mod reply;
pub mod scripts;
pub mod slots;

pub use conn::{
    Backoff, Conn, Doing, Health, RedisFailure, StreamError, StreamResult, connect_patiently,
};
pub use deployment::Redis;
pub use endpoint::{Access, BadUrl, Credentials, Endpoint, NodeAddr, URL_FORMS};
