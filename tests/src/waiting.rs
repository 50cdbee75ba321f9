//! Waiting for a condition, never for a fixed time: a condition polled
//! until it holds, a line or a named event in a log.

use std::path::Path;
use std::time::{Duration, Instant};

/// Waits until the file at `log` has a line containing `needle`, and
/// returns that line; fails after `limit` with the whole log.
pub async fn wait_for_line(log: &Path, needle: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        if started.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {needle:?} in the log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` every 20 ms until it returns true, or fails after `limit`
/// naming `what` was waited for.
pub async fn wait_for(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        if started.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lines of the log at `log` that report the named event (`event=name`:
/// see the host's `events` module), in order.
pub fn events_in(log: &Path, name: &str) -> Vec<String> {
    let needle = format!("event={name} ");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle) || l.ends_with(&format!("event={name}")))
        .map(str::to_owned)
        .collect()
}

/// Waits until the log at `log` reports the named event, and returns its
/// first such line.
pub async fn wait_for_event(log: &Path, name: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = events_in(log, name).into_iter().next() {
            return line;
        }
        if started.elapsed() > limit {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("timed out after {limit:?} waiting for event {name} in the log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
