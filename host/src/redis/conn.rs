//! The failures of Redis calls as the loops act on them, the health they
//! share, and their backoff.

use std::time::Duration;

/// Longest wait between two attempts to reach Redis, for the loops and the
/// shared connection alike: once Redis is back, work resumes within it (plus
/// a connection attempt).
pub const MAX_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Why a Redis call failed, as the loops act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailure {
    /// Redis could not be reached, stopped answering, or says it cannot
    /// serve for now (loading its data, its master down, busy with a
    /// script): retry with backoff, logging the outage once.
    Outage,
    /// A consumer group (or its stream) does not exist: recreate it, or
    /// wait for an operator, as configured.
    MissingGroup,
    /// Redis answered, but with an error or a reply the host does not
    /// understand (a key of the wrong type, a script error): logged as it
    /// is, retried with backoff.
    Refused,
    /// Another node serves the key now (a slot moved or is moving, a
    /// failover): retried at once on the node the topology names when read
    /// again; no outage.
    Moved,
}

/// A failed Redis call: what the host was doing, why it failed, and how to
/// treat it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct StreamError {
    pub kind: RedisFailure,
    pub what: String,
    pub detail: String,
}

/// A stream operation's result.
pub type StreamResult<T> = std::result::Result<T, StreamError>;

impl StreamError {
    /// A Redis error met while doing `what`.
    pub fn redis(what: impl Into<String>, e: &redis::RedisError) -> Self {
        let kind = if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error()
        {
            RedisFailure::Outage
        } else {
            e.code().map_or(RedisFailure::Refused, kind_of_code)
        };
        StreamError {
            kind,
            what: what.into(),
            detail: e.to_string(),
        }
    }

    /// An I/O error while doing `what`: Redis could not be reached.
    pub fn io(what: impl Into<String>, e: std::io::Error) -> Self {
        StreamError {
            kind: RedisFailure::Outage,
            what: what.into(),
            detail: e.to_string(),
        }
    }

    /// An error reply (the line after its `-`) while doing `what`.
    pub fn from_reply(what: impl Into<String>, line: &[u8]) -> Self {
        let line = String::from_utf8_lossy(line).into_owned();
        let code = line.split_whitespace().next().unwrap_or("");
        StreamError {
            kind: kind_of_code(code),
            what: what.into(),
            detail: line,
        }
    }

    /// Redis could not serve while doing `what`.
    pub fn outage(what: impl Into<String>, detail: impl Into<String>) -> Self {
        StreamError {
            kind: RedisFailure::Outage,
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// A reply the host did not expect while doing `what`.
    pub fn protocol(what: impl Into<String>, detail: impl Into<String>) -> Self {
        StreamError {
            kind: RedisFailure::Refused,
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub fn is_outage(&self) -> bool {
        self.kind == RedisFailure::Outage
    }
}

/// How an error reply's code is treated: a missing group, Redis unable to
/// serve for now (loading its data, its master down, busy with a script),
/// or a refusal.
fn kind_of_code(code: &str) -> RedisFailure {
    match code {
        "NOGROUP" => RedisFailure::MissingGroup,
        // Redis cannot serve for now, or refuses the host's credentials
        // (an outage until an operator fixes them, said once, not at every
        // retry).
        "LOADING" | "MASTERDOWN" | "BUSY" | "CLUSTERDOWN" | "WRONGPASS" | "NOAUTH" | "NOPERM" => {
            RedisFailure::Outage
        }
        // Another node serves the key now: a slot moved or is moving, a
        // replica that was the master refuses writes, a blocked read's key
        // went to another node.
        "MOVED" | "ASK" | "TRYAGAIN" | "READONLY" | "UNBLOCKED" => RedisFailure::Moved,
        _ => RedisFailure::Refused,
    }
}

/// Adds what the host was doing to a Redis result.
pub trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> StreamResult<T>;
}

impl<T> Doing<T> for redis::RedisResult<T> {
    fn doing(self, what: impl FnOnce() -> String) -> StreamResult<T> {
        self.map_err(|e| StreamError::redis(what(), &e))
    }
}

/// Whether Redis answers, shared by every loop of a host, so that an outage
/// is logged once when it starts and once when it ends, not by every loop at
/// every retry.
#[derive(Debug, Default)]
pub struct Health {
    down_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Health {
    /// A call failed.
    pub fn failed(&self, e: &StreamError) {
        if e.kind == RedisFailure::Moved {
            tracing::debug!(error = %e, "Another Redis node serves the key now; retrying there.");
            return;
        }
        if !e.is_outage() {
            tracing::error!(error = %e, "Redis refused a command; retrying.");
            return;
        }
        let mut down = self.down_since.lock().expect("health lock");
        if down.is_none() {
            *down = Some(std::time::Instant::now());
            tracing::error!(event = "redis_unreachable", error = %e, "Redis is unreachable; retrying with backoff until it is back.");
        } else {
            tracing::debug!(error = %e, "Redis still unreachable.");
        }
    }

    /// A call succeeded.
    pub fn ok(&self) {
        let mut down = self.down_since.lock().expect("health lock");
        if let Some(since) = down.take() {
            tracing::warn!(
                down_for_ms = since.elapsed().as_millis() as u64,
                "Redis is reachable again; resuming."
            );
        }
    }

    /// Whether the last call failed for want of Redis.
    pub fn is_down(&self) -> bool {
        self.down_since.lock().expect("health lock").is_some()
    }
}

/// Exponential backoff for a loop whose Redis calls fail: 50 ms doubling to
/// [`MAX_RETRY_DELAY`], so an outage neither spins nor delays recovery.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ms = 50u64.saturating_mul(1 << self.failures.min(8).saturating_sub(1));
        Duration::from_millis(ms).min(MAX_RETRY_DELAY)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_stays_under_the_cap() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| b.delay().as_millis() as u64).collect();
        assert_eq!(delays, [50, 100, 200, 400, 500, 500, 500, 500]);
        b.reset();
        assert_eq!(b.delay(), Duration::from_millis(50));
    }

    #[test]
    fn failures_are_classified() {
        let io = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert_eq!(StreamError::redis("x", &io).kind, RedisFailure::Outage);
        let p = StreamError::protocol("reading", "odd reply");
        assert_eq!(p.kind, RedisFailure::Refused);
        assert_eq!(p.to_string(), "reading: odd reply");
        // Errors Redis answers with, as it sends them.
        let reply = |wire: &str| {
            redis::parse_redis_value(wire.as_bytes())
                .and_then(redis::Value::extract_error)
                .expect_err("an error reply")
        };
        for (wire, kind) in [
            (
                "-NOGROUP No such key or consumer group\r\n",
                RedisFailure::MissingGroup,
            ),
            (
                "-LOADING Redis is loading the dataset in memory\r\n",
                RedisFailure::Outage,
            ),
            (
                "-MASTERDOWN Link with MASTER is down\r\n",
                RedisFailure::Outage,
            ),
            (
                "-BUSY Redis is busy running a script\r\n",
                RedisFailure::Outage,
            ),
            (
                "-READONLY You can't write against a read only replica.\r\n",
                RedisFailure::Moved,
            ),
            ("-MOVED 3999 127.0.0.1:6381\r\n", RedisFailure::Moved),
            (
                "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
                RedisFailure::Moved,
            ),
            (
                "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                RedisFailure::Outage,
            ),
            (
                "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                RedisFailure::Refused,
            ),
        ] {
            assert_eq!(StreamError::redis("x", &reply(wire)).kind, kind, "{wire}");
        }
    }
}
