//! Waiting for a condition, never for a fixed time: a condition polled
//! until it holds (or a value until it comes), a value until it stops
//! changing, a line or a named event in a log; and a condition that must
//! keep holding while a fault lasts.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns a value, and returns it; fails after
/// `limit` naming `what` was waited for (and what `check` last said, if it
/// says why in `Err`).
pub async fn wait_for_value<T>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if started.elapsed() > limit => {
                panic!("timed out after {limit:?} waiting for: {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Polls `check` until it returns true, or fails after `limit` naming
/// `what` was waited for.
pub async fn wait_for(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    wait_for_value(limit, what, async || {
        if check().await {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await
}

/// Polls `read` until it returns the same value `times` polls in a row
/// (100 ms apart), and returns that value: for a count that settles once
/// the host has dealt with something, whose final value is what a test
/// checks.
pub async fn wait_for_stable<T: PartialEq + Clone + std::fmt::Debug>(
    limit: Duration,
    what: &str,
    times: usize,
    mut read: impl AsyncFnMut() -> T,
) -> T {
    let started = Instant::now();
    let mut last = read().await;
    let mut same = 1;
    while same < times {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = read().await;
        if now == last {
            same += 1;
        } else {
            (last, same) = (now, 1);
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not settle within {limit:?}: last {last:?}"
        );
    }
    last
}

/// Checks `check` every 20 ms for `duration` (a fault the test keeps up that
/// long): it must hold every time.
pub async fn holds_for(duration: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < duration {
        assert!(
            check().await,
            "no longer true after {:?}: {what}",
            started.elapsed()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the file at `log` has a line containing `needle`, and
/// returns that line; fails after `limit` with the whole log.
pub async fn wait_for_line(log: &Path, needle: &str, limit: Duration) -> String {
    wait_for_value(limit, &format!("{needle:?} in the log"), async || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .find(|l| l.contains(needle))
            .map(str::to_owned)
            .ok_or_else(|| format!("the log:\n{text}"))
    })
    .await
}

/// The lines of the log at `log` that report the named event (`event=name`:
/// see the host's `events` module), in order.
pub fn events_in(log: &Path, name: &str) -> Vec<String> {
    let field = format!("event={name}");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == field))
        .map(str::to_owned)
        .collect()
}

/// Waits until the log at `log` reports the named event, and returns its
/// first such line.
pub async fn wait_for_event(log: &Path, name: &str, limit: Duration) -> String {
    wait_for_value(limit, &format!("event {name} in the log"), async || {
        events_in(log, name).into_iter().next().ok_or_else(|| {
            format!(
                "the log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
    })
    .await
}
