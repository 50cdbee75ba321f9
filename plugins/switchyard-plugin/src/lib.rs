//! Writing a Switchyard plugin in Rust, against contract
//! `switchyard:plugin@0.2.0` (wit/plugin.wit).
//!
//! ```ignore
//! use switchyard_plugin::{Failure, Handler, Message, http};
//!
//! struct Notify;
//!
//! impl Handler for Notify {
//!     fn handle(message: Message) -> Result<(), Failure> {
//!         let url = switchyard_plugin::config::required("url")?;
//!         let response = http::Request::post(&url)
//!             .idempotency_key(&message.id)
//!             .json_text(message.body.clone())
//!             .send()
//!             .map_err(|e| e.into_failure("notifying"))?;
//!         http::check(response, "notifying").map(drop)
//!     }
//! }
//!
//! switchyard_plugin::export!(Notify);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` in a crate of
//! `crate-type = ["cdylib"]`; the `.wasm` it writes is the plugin.
//!
//! What is here:
//! - [`bindings`]: the contract's generated bindings, every import and the
//!   handler export, for whatever the helpers below do not cover;
//! - [`Handler`], [`Message`], [`Failure`] and [`export!`];
//! - [`log`], [`config`] and [`publish`];
//! - [`http`]: a blocking HTTP client over `wasi:http/outgoing-handler`,
//!   and [`http::check`], the rule every shipped plugin applies to an
//!   answer (2xx succeeds; 408, 429 and 5xx retry, honouring
//!   `Retry-After`; any other status rejects);
//! - [`kv`]: the queue's key-value buckets (`wasi:keyvalue`).
//!
//! Any other HTTP client built on `wasi:http` 0.2 works as well (for
//! example `wstd`'s): the host sees the same requests.

pub mod http;

/// The generated bindings of the contract's world.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        generate_all,
        pub_export_macro: true,
        default_bindings_module: "switchyard_plugin::bindings",
    });
}

use std::time::Duration;

pub use bindings::exports::switchyard::plugin::handler::Guest as Handler;
pub use bindings::switchyard::plugin::messages::{Failure, Message, Retry};

/// Exports a type implementing [`Handler`] as the plugin's handler:
/// `switchyard_plugin::export!(MyHandler);`, once, at the crate's top level.
pub use bindings::export;

impl Failure {
    /// A transient failure: the message is delivered again after the
    /// queue's backoff.
    pub fn retry(reason: impl Into<String>) -> Self {
        Failure::Retry(Retry {
            reason: reason.into(),
            delay_ms: None,
        })
    }

    /// A transient failure: the message is delivered again after `delay`
    /// (at most the queue's `visibility_timeout`).
    pub fn retry_after(reason: impl Into<String>, delay: Duration) -> Self {
        Failure::Retry(Retry {
            reason: reason.into(),
            delay_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
        })
    }

    /// A permanent failure: the message is dead-lettered with `reason`.
    pub fn reject(reason: impl Into<String>) -> Self {
        Failure::Reject(reason.into())
    }
}

impl Message {
    /// The value of a header the producer sent (`traceparent`, ...), by
    /// name, without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as `T`; a body that does not fit is rejected (it
    /// will never fit).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_str(&self.body).map_err(|e| {
            Failure::reject(format!("the {} body does not fit: {e}", self.message_type))
        })
    }
}

/// Log lines, in the host's log with the queue, the message id and the
/// plugin's hash.
pub mod log {
    use crate::bindings::switchyard::plugin::log::{Level, log};

    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// The queue's `[queues.<name>.config]` table.
pub mod config {
    use std::time::Duration;

    use crate::Failure;
    use crate::bindings::switchyard::plugin::config;

    /// How long a message waits before it is tried again when the queue's
    /// config lacks a setting: the message is fine, the operator's fix is
    /// what is missing, so it is neither rejected nor retried at once.
    pub const MISSING_SETTING_DELAY: Duration = Duration::from_secs(60);

    /// One setting: a string as it is, anything else as JSON text.
    pub fn get(key: &str) -> Option<String> {
        config::get(key)
    }

    /// One setting that must be present and not empty; without it the
    /// message is retried after [`MISSING_SETTING_DELAY`].
    pub fn required(key: &str) -> Result<String, Failure> {
        get(key).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            Failure::retry_after(
                format!("the queue's config has no `{key}`"),
                MISSING_SETTING_DELAY,
            )
        })
    }

    /// The whole table, as a JSON object.
    pub fn json() -> serde_json::Value {
        serde_json::from_str(&config::get_json()).unwrap_or_default()
    }
}

/// Follow-up messages, sent only if the delivery that publishes them is
/// acknowledged.
pub mod publish {
    use crate::bindings::switchyard::plugin::publish;

    /// Publishes a message of `message_type` with a JSON `body`; returns its
    /// id, or why the host refused it.
    pub fn publish(
        message_type: &str,
        body: &serde_json::Value,
        headers: &[(String, String)],
    ) -> Result<String, String> {
        publish::publish(message_type, &body.to_string(), headers)
    }
}

/// The queue's key-value buckets (`wasi:keyvalue` 0.2.0-draft2), granted by
/// `[queues.<name>.keyvalue]`.
pub mod kv {
    pub use crate::bindings::wasi::keyvalue::atomics;
    pub use crate::bindings::wasi::keyvalue::store::{Bucket, Error, KeyResponse, open};

    /// What an error says, for a reason or a log line.
    pub fn error_text(e: &Error) -> String {
        match e {
            Error::NoSuchStore => "no such bucket".into(),
            Error::AccessDenied => "key-value state is not granted to this queue".into(),
            Error::Other(text) => text.clone(),
        }
    }
}
