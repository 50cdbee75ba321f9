//! What the probing plugins report: the `io-probe` plugin's results (the
//! reason of its dead letter) and the `recorder` plugin's handlings.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::{TestConfig, dead_letters, wait_for_value, xadd};

/// The results an `io-probe` message reported: the reason of its dead
/// letter, a JSON array with one result per step. Waits up to `limit`.
pub async fn probe_report(
    conn: &mut MultiplexedConnection,
    cfg: &TestConfig,
    id: &str,
    limit: Duration,
) -> Vec<serde_json::Value> {
    wait_for_value(limit, &format!("the report of {id}"), async || {
        let found = dead_letters(conn, cfg)
            .await
            .into_iter()
            .find(|d| d.message_id == id);
        let Some(d) = found else {
            return Err("no dead letter yet".into());
        };
        let report = d.reason.trim_start_matches("rejected by the plugin: ");
        Ok(serde_json::from_str(report)
            .unwrap_or_else(|e| panic!("the report of {id} is not JSON ({e}): {}", d.reason)))
    })
    .await
}

/// XADDs an `io-probe` message of `message_type` with `id` that runs
/// `steps`, then does `then` (`report`, `ok`, `retry`, `trap`).
/// Sends an `io-probe` message whose steps end in a report, and returns
/// the report.
pub async fn probe(
    conn: &mut MultiplexedConnection,
    cfg: &TestConfig,
    message_type: &str,
    id: &str,
    steps: serde_json::Value,
    limit: Duration,
) -> Vec<serde_json::Value> {
    send_probe(conn, cfg, message_type, id, steps, "report").await;
    probe_report(conn, cfg, id, limit).await
}

/// Sends an `io-probe` message whose last step is `then`.
pub async fn send_probe(
    conn: &mut MultiplexedConnection,
    cfg: &TestConfig,
    message_type: &str,
    id: &str,
    steps: serde_json::Value,
    then: &str,
) {
    let body = serde_json::json!({ "steps": steps, "then": then }).to_string();
    xadd(
        conn,
        cfg.ingress(),
        &[("type", message_type), ("id", id), ("body", &body)],
    )
    .await;
}

/// The handlings the `recorder` plugin logged in `logs`: how many times each
/// (queue, message id) was handled.
pub fn handlings(logs: &[PathBuf]) -> std::collections::BTreeMap<(String, String), usize> {
    let mut counts = std::collections::BTreeMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.split("record id=").nth(1) else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let id = words.next().unwrap_or_default().to_owned();
            let queue = words
                .next()
                .and_then(|w| w.strip_prefix("queue="))
                .unwrap_or_default()
                .to_owned();
            *counts.entry((queue, id)).or_insert(0) += 1;
        }
    }
    counts
}
