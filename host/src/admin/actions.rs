//! The dashboard's actions on dead letters, `POST /api/dead/replay` and
//! `/api/dead/delete`: the admin token checked, then the same code as
//! `switchyard dead`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{Access, ApiError, FilterParams, budget, error};
use super::dead::{self, Replayed};
use super::state::AdminState;
use crate::stream::Keys;

/// What an action applies to: ids, or every dead letter matching a filter.
#[derive(Debug, Deserialize)]
pub(super) struct Action {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    filter: Option<FilterParams>,
}

/// What an action needs once its caller is let in: the configuration, a
/// connection, the keys and the dead letters it applies to.
struct Authorised {
    config: Arc<crate::config::Config>,
    conn: crate::redis::Conn,
    keys: Keys,
    ids: Vec<String>,
}

/// Checks the caller's token, then names the dead letters the action
/// applies to.
async fn authorised(
    state: &AdminState,
    headers: &HeaderMap,
    action: Action,
) -> Result<Authorised, ApiError> {
    if state.token.is_none() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the dashboard is read-only: the host has no SWITCHYARD_ADMIN_TOKEN".into(),
        ));
    }
    if state.access(headers) != Some(Access::Admin) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "actions need the admin token (this one is read-only or unknown)".into(),
        ));
    }
    let config = state.config.load_full();
    let Some(mut conn) = state.conn().await else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis does not answer".into(),
        ));
    };
    let keys = state.keys(&config);
    let ids = if action.all {
        let filter = action.filter.unwrap_or_default().filter()?;
        let all = async {
            let partitions = dead::partitions(&mut conn, &config, &keys).await?;
            dead::search(
                &mut conn,
                &partitions,
                &filter,
                0,
                None,
                budget(state, true),
            )
            .await
        };
        all.await
            .map(|found| found.letters.into_iter().map(|d| d.id).collect())
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))?
    } else if action.ids.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "give ids, or all with a filter".into(),
        ));
    } else {
        dead::checked_ids(action.ids)
            .map_err(|why| ApiError(StatusCode::BAD_REQUEST, why.to_string()))?
    };
    Ok(Authorised {
        config,
        conn,
        keys,
        ids,
    })
}

pub(super) async fn replay(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Json(action): Json<Action>,
) -> Response {
    let Authorised {
        config,
        mut conn,
        keys,
        ids,
    } = match authorised(&state, &headers, action).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    match dead::replay(&mut conn, &config, &keys, &ids).await {
        Ok(results) => {
            let results: Vec<Value> = results
                .into_iter()
                .map(|(id, r)| match r {
                    Replayed::Done { stream, entry } => {
                        tracing::info!(dead_letter = %id, stream = %stream, entry = %entry, "Dead letter replayed from the dashboard.");
                        json!({ "id": id, "result": "replayed", "stream": stream, "entry": entry })
                    }
                    Replayed::Gone => json!({ "id": id, "result": "gone" }),
                    Replayed::Refused(why) => json!({ "id": id, "result": "refused", "reason": why }),
                })
                .collect();
            Json(json!({ "results": results })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

pub(super) async fn delete(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Json(action): Json<Action>,
) -> Response {
    let Authorised {
        mut conn,
        keys,
        ids,
        ..
    } = match authorised(&state, &headers, action).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    match dead::purge(&mut conn, &keys, &ids).await {
        Ok(n) => {
            tracing::info!(deleted = n, "Dead letters deleted from the dashboard.");
            Json(json!({ "deleted": n })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}
