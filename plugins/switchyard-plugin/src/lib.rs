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
//! - [`kv`]: the queue's key-value buckets (`wasi:keyvalue`);
//! - [`sql`]: the queue's PostgreSQL database, and [`sql::into_failure`],
//!   which error retries and which rejects;
//! - [`mail`]: the queue's SMTP relay;
//! - [`partition`]: the producer contract's rule for the partition of a
//!   message, for code that writes to the ingress itself.
//!
//! Any other HTTP client built on `wasi:http` 0.2 works as well (for
//! example `wstd`'s): the host sees the same requests.

pub mod http;
pub mod partition;

/// The generated bindings of the contract's world.
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
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
/// Only a WebAssembly build exports it: a native build of the crate (its
/// unit tests, `cargo test`'s link of the library) has nothing to export,
/// and the contract's names are no symbols a native linker takes.
#[macro_export]
macro_rules! export {
    ($handler:ident) => {
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!($handler);
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn($crate::Message) -> ::core::result::Result<(), $crate::Failure> =
            <$handler as $crate::Handler>::handle;
    };
}

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

/// SQL on the queue's PostgreSQL database (`[queues.<name>.sql]`).
pub mod sql {
    pub use crate::bindings::switchyard::plugin::sql::{
        Column, DatabaseError, DbValue as Value, Error, RowSet, begin, commit, execute, query,
        rollback,
    };

    use crate::Failure;
    use crate::config::MISSING_SETTING_DELAY;

    /// What an error says, for a reason or a log line.
    pub fn error_text(e: &Error) -> String {
        match e {
            Error::NotGranted => "the queue has no database (queues.<name>.sql)".into(),
            Error::Database(d) => format!("{} (SQLSTATE {})", d.message, d.code),
            Error::Unavailable(s) => format!("no database connection: {s}"),
            Error::Timeout(s) | Error::Invalid(s) => s.clone(),
        }
    }

    /// The outcome an error calls for: try again later when it is
    /// transient, or when the operator must act (no database granted, a
    /// missing table, privileges, a bad login: classes 42, 3F, 28 and 0A);
    /// reject when the data itself is refused (a value out of range, a
    /// constraint: classes 22 and 23) or the statement is malformed.
    pub fn into_failure(e: Error, what: &str) -> Failure {
        let reason = format!("{what}: {}", error_text(&e));
        match &e {
            Error::NotGranted => Failure::retry_after(reason, MISSING_SETTING_DELAY),
            Error::Unavailable(_) | Error::Timeout(_) => Failure::retry(reason),
            Error::Database(d) if d.transient => Failure::retry(reason),
            Error::Database(d)
                if ["42", "3F", "28", "0A"]
                    .iter()
                    .any(|class| d.code.starts_with(class)) =>
            {
                Failure::retry_after(reason, MISSING_SETTING_DELAY)
            }
            Error::Database(_) | Error::Invalid(_) => Failure::reject(reason),
        }
    }

    /// Runs `work` in a transaction: committed if it returns `Ok`, rolled
    /// back otherwise (and the host rolls back a transaction a call leaves
    /// open).
    pub fn transaction<T>(work: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        begin()?;
        match work() {
            Ok(value) => {
                commit()?;
                Ok(value)
            }
            Err(e) => {
                let _ = rollback();
                Err(e)
            }
        }
    }

    impl From<i32> for Value {
        fn from(n: i32) -> Self {
            Value::Int32(n)
        }
    }

    impl From<i64> for Value {
        fn from(n: i64) -> Self {
            Value::Int64(n)
        }
    }

    impl From<f64> for Value {
        fn from(f: f64) -> Self {
            Value::Floating64(f)
        }
    }

    impl From<bool> for Value {
        fn from(b: bool) -> Self {
            Value::Boolean(b)
        }
    }

    impl From<&str> for Value {
        fn from(s: &str) -> Self {
            Value::Str(s.to_owned())
        }
    }

    impl From<String> for Value {
        fn from(s: String) -> Self {
            Value::Str(s)
        }
    }

    impl<T: Into<Value>> From<Option<T>> for Value {
        fn from(v: Option<T>) -> Self {
            v.map_or(Value::Null, Into::into)
        }
    }
}

/// Mail through the queue's SMTP relay (`[queues.<name>.mail]`).
pub mod mail {
    pub use crate::bindings::switchyard::plugin::mail::{Email, Error, send};

    use crate::Failure;
    use crate::config::MISSING_SETTING_DELAY;

    /// What an error says, for a reason or a log line.
    pub fn error_text(e: &Error) -> String {
        match e {
            Error::NotGranted => "the queue has no mail relay (queues.<name>.mail)".into(),
            Error::Invalid(s) => s.clone(),
            Error::Permanent(s) => format!("the relay refused it: {s}"),
            Error::Transient(s) => format!("not sent: {s}"),
        }
    }

    /// The outcome an error calls for: a relay's 5xx or an invalid mail
    /// rejects; a 4xx or an unreachable relay retries; no relay granted
    /// waits for the operator.
    pub fn into_failure(e: Error, what: &str) -> Failure {
        let reason = format!("{what}: {}", error_text(&e));
        match e {
            Error::NotGranted => Failure::retry_after(reason, MISSING_SETTING_DELAY),
            Error::Transient(_) => Failure::retry(reason),
            Error::Invalid(_) | Error::Permanent(_) => Failure::reject(reason),
        }
    }

    /// A mail with only the fields every mail has; fill in the rest.
    pub fn new(from: &str, to: Vec<String>, subject: &str) -> Email {
        Email {
            from: from.to_owned(),
            to,
            cc: Vec::new(),
            bcc: Vec::new(),
            reply_to: None,
            subject: subject.to_owned(),
            text: None,
            html: None,
            headers: Vec::new(),
        }
    }
}

/// The queue's key-value buckets (`wasi:keyvalue` 0.2.0-draft2), granted by
/// `[queues.<name>.keyvalue]`.
pub mod kv {
    pub use crate::bindings::wasi::keyvalue::atomics;
    pub use crate::bindings::wasi::keyvalue::store::{Bucket, Error, KeyResponse, open};

    use crate::Failure;
    use crate::config::MISSING_SETTING_DELAY;

    /// What an error says, for a reason or a log line.
    pub fn error_text(e: &Error) -> String {
        match e {
            Error::NoSuchStore => "no such bucket".into(),
            Error::AccessDenied => "key-value state is not granted to this queue".into(),
            Error::Other(text) => text.clone(),
        }
    }

    /// The failure an error while doing `what` makes: no grant waits for
    /// the operator; anything else (the store down, the quota) retries.
    pub fn into_failure(e: Error, what: &str) -> Failure {
        match e {
            Error::AccessDenied => {
                Failure::retry_after(format!("{what}: {}", error_text(&e)), MISSING_SETTING_DELAY)
            }
            e => Failure::retry(format!("{what}: {}", error_text(&e))),
        }
    }

    /// A key's value as text, if it has one.
    pub fn get_text(bucket: &str, key: &str) -> Result<Option<String>, Error> {
        Ok(open(bucket)?
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Sets a key's value.
    pub fn set_text(bucket: &str, key: &str, value: &str) -> Result<(), Error> {
        open(bucket)?.set(key, value.as_bytes())
    }

    /// Adds `delta` to a key's integer value (0 when absent), atomically;
    /// returns the new value.
    pub fn increment(bucket: &str, key: &str, delta: i64) -> Result<i64, Error> {
        atomics::increment(&open(bucket)?, key, delta)
    }
}

/// Running a built plugin the way a queue does, without Redis, from a
/// test: `switchyard invoke`, found as `$SWITCHYARD` or on the `PATH`.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use std::path::Path;
    use std::process::Command;

    /// `switchyard invoke <plugin> --type <message_type> --body <body>
    /// --json <args>`: its JSON report (`outcome`, `reason`, `logs`,
    /// `requests`, `keyvalue`, `published`...). Panics with what went
    /// wrong when the command cannot run or the plugin did not load.
    pub fn invoke(
        plugin: impl AsRef<Path>,
        message_type: &str,
        body: &str,
        args: &[&str],
    ) -> serde_json::Value {
        let plugin = plugin.as_ref();
        assert!(
            plugin.is_file(),
            "{} is not built yet: cargo build --release --target wasm32-wasip2",
            plugin.display()
        );
        let program = std::env::var("SWITCHYARD").unwrap_or_else(|_| "switchyard".into());
        let out = Command::new(&program)
            .arg("invoke")
            .arg(plugin)
            .args(["--type", message_type, "--body", body, "--json"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e} (set SWITCHYARD to its path)"));
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{program} invoke gave no report ({e}): {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}
