//! What a plugin imports, one module per interface: `log` and `config`,
//! `publish`, key-value state, outbound HTTP, SQL and mail. Each checks
//! the queue's grant and its bounds before it does anything.

pub mod http;
pub mod keyvalue;
pub mod log_config;
pub mod mail;
pub mod publish;
pub mod sql;
