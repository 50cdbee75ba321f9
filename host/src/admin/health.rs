//! `GET /healthz` (the process runs) and `GET /readyz` (Redis answers,
//! every consumer group exists, every queue has its plugin loaded; 503 with
//! one line per problem otherwise).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::state::{AdminState, READY_STATS_AGE, REDIS_BUDGET};
use crate::stream::registry::State as PartitionState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let config = state.config.load_full();
    let mut problems = Vec::new();
    let up = match state.conn().await {
        Some(mut conn) => matches!(
            tokio::time::timeout(
                REDIS_BUDGET,
                redis::cmd("PING").query_async::<String>(&mut conn)
            )
            .await,
            Ok(Ok(_))
        ),
        None => false,
    };
    if up {
        // Readiness follows a consumer group's creation within a second,
        // whatever the scrape interval.
        let stats = state.stats_within(READY_STATS_AGE).await;
        match &stats.status {
            Some(s) => {
                // The partitions read now (a drained one is read no more).
                for p in s
                    .partitions
                    .iter()
                    .filter(|p| p.state != PartitionState::Drained)
                {
                    if !p.ingress.group {
                        problems.push(format!("no consumer group on {}", p.ingress.key));
                    }
                    for (name, q, _) in &p.queues {
                        if !q.group {
                            problems.push(format!("queue {name}: no consumer group on {}", q.key));
                        }
                    }
                }
            }
            None => problems.push("Redis could not be read".into()),
        }
    } else {
        problems.push("Redis does not answer".into());
    }
    for name in config.queues.keys() {
        let loaded = state
            .metrics
            .queue(name)
            .plugin
            .read()
            .expect("metrics lock")
            .is_some();
        if !loaded {
            problems.push(format!("queue {name}: no plugin loaded"));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
    }
}
