//! The Redis client layer: where Redis is ([`endpoint`]), the deployment
//! ([`deployment`]) and its shared connection ([`shared`]), the failures of
//! calls ([`conn`]), cluster slots
//! ([`slots`]), the bounded reader of stream replies, replies read into
//! the host's types, and the Lua scripts of every atomic step.

pub mod bounded;
pub mod conn;
pub mod deployment;
pub mod endpoint;
pub mod read;
pub mod reply;
pub mod scripts;
pub mod shared;
pub mod slots;

pub use conn::{Backoff, Doing, Health, RedisFailure, StreamError, StreamResult};
pub use deployment::{Redis, connect_patiently};
pub use endpoint::{Access, BadUrl, Credentials, Endpoint, NodeAddr, URL_FORMS};
pub use shared::Conn;
