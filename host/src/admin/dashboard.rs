//! The dashboard at `/` and the JSON API behind it, on the admin server.
//!
//! Pages (one HTML file, its script and style, all served by the binary):
//! the queues with their rates, backlogs and plugins, updated every two
//! seconds; a queue's recent failures and settings (secrets masked); the
//! dead letters, filtered, one in full, and replay and delete; the routes.
//!
//! It answers only to the Host names it serves (loopback's, any address
//! literal, and `[admin] hosts`): a web page whose own name was made to
//! resolve to this host (DNS rebinding) gets nothing. Its data
//! (`/api/*`) needs `Authorization: Bearer <token>`, the admin token
//! (`SWITCHYARD_ADMIN_TOKEN`) or a read-only one
//! (`SWITCHYARD_ADMIN_READ_TOKEN`); actions (`POST /api/dead/replay`,
//! `/api/dead/delete`) need the admin token. With neither set, the
//! dashboard shows nothing. Actions run the same code as `switchyard dead`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::api::{Access, FilterParams, budget, error};
use super::dead::{self, Filter};
use super::state::AdminState;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Failures a queue's page shows, newest first.
const RECENT: usize = 20;

pub fn routes(state: Arc<AdminState>) -> axum::Router<Arc<AdminState>> {
    axum::Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/overview", get(overview))
        .route("/api/queues/{name}", get(queue))
        .route("/api/history", get(history))
        .route("/api/dead", get(dead_list))
        .route("/api/dead/{id}", get(dead_show))
        .route("/api/dead/replay", post(super::actions::replay))
        .route("/api/dead/delete", post(super::actions::delete))
        .layer(axum::middleware::from_fn_with_state(state, guard))
}

/// Whether the dashboard answers to a request's `Host`: a name it serves,
/// or an address literal (which no web page can rebind).
fn host_allowed(host: Option<&str>, hosts: &[String]) -> bool {
    let Some(host) = host else { return false };
    let name = if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || hosts.contains(&name)
}

/// The Host check for every page, and a token for the data.
async fn guard(
    State(state): State<Arc<AdminState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let config = state.config.load();
    let hosts = config.admin.as_ref().map_or(&[][..], |a| &a.hosts[..]);
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host_allowed(host, hosts) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this admin server does not answer to the host {:?}: add it to [admin] hosts in queues.toml\n",
                crate::text::bounded(host.unwrap_or(""), 256)
            ),
        )
            .into_response();
    }
    if request.uri().path().starts_with("/api/") {
        if state.token.is_none() && state.read_token.is_none() {
            return error(
                StatusCode::FORBIDDEN,
                "the dashboard is off: the host has neither SWITCHYARD_ADMIN_TOKEN nor SWITCHYARD_ADMIN_READ_TOKEN",
            );
        }
        if state.access(request.headers()).is_none() {
            return error(
                StatusCode::UNAUTHORIZED,
                "a token is required: the admin token or the read-only token",
            );
        }
    }
    next.run(request).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Nothing from elsewhere: no inline script, no other origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn overview(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let config = state.config.load_full();
    let stats = state.stats().await;
    let from_redis = |name: &str| {
        stats
            .status
            .as_ref()
            .and_then(|s| s.queues.iter().find(|(n, _, _)| n == name))
            .map(|(_, q, retrying)| (q.lag, q.pending, *retrying))
    };
    let queues: Vec<Value> = config
        .queues
        .values()
        .map(|q| {
            let m = state.metrics.queue(&q.name);
            let c = m.snapshot();
            let plugin = m.plugin.read().expect("metrics lock").clone();
            let refusal = m.last_refusal.read().expect("metrics lock").clone();
            let redis = from_redis(&q.name);
            json!({
                "name": q.name,
                "received": c.attempts,
                "succeeded": c.succeeded,
                "retried": c.retried,
                "failed": c.failed,
                "rejected": c.rejected,
                "dead_lettered": c.dead_lettered,
                "in_flight": c.in_flight,
                "concurrency": m.concurrency.load(Ordering::Relaxed),
                "concurrency_min": q.concurrency_min,
                "concurrency_max": q.concurrency,
                "backlog": redis.and_then(|r| r.0),
                "pending": redis.map(|r| r.1),
                "retrying": redis.map(|r| r.2),
                "plugin": plugin.map(|p| json!({
                    "version": p.version,
                    "contract": p.contract,
                    "loaded_at": p.loaded_at,
                })),
                "last_refusal": refusal.map(|(at, reason)| json!({ "at": at, "reason": reason })),
            })
        })
        .collect();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|(t, qs)| json!({ "type": t, "queues": qs, "validate": config.validated.contains(t) }))
        .collect();
    let partitions: Vec<Value> = stats
        .status
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| {
            let lags: Option<u64> = std::iter::once(p.ingress.lag)
                .chain(p.queues.iter().map(|(_, q, _)| q.lag))
                .sum();
            json!({
                "id": p.id,
                "ingress": p.ingress.key,
                "state": p.state.as_str(),
                "backlog": lags,
                "pending": p.ingress.pending + p.queues.iter().map(|(_, q, _)| q.pending).sum::<u64>(),
                "dead_letters": p.dead_letters,
            })
        })
        .collect();
    Json(json!({
        "actions": state.access(&headers) == Some(Access::Admin),
        "redis_up": stats.status.is_some(),
        "dead_letters": stats.status.as_ref().map(|s| s.dead_letters),
        "queues": queues,
        "partitions": partitions,
        "routes": routes,
    }))
    .into_response()
}

async fn queue(State(state): State<Arc<AdminState>>, Path(name): Path<String>) -> Response {
    let config = state.config.load_full();
    if !config.queues.contains_key(&name) {
        return error(StatusCode::NOT_FOUND, format!("no queue named {name:?}"));
    }
    let prefix = format!("queues.{name}.");
    let settings: serde_json::Map<String, Value> = config
        .settings()
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_owned(), Value::String(v.text))))
        .collect();
    let Some(mut conn) = state.conn().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Redis does not answer");
    };
    let keys = state.keys(&config);
    let filter = Filter {
        queue: Some(name.clone()),
        ..Default::default()
    };
    let read = async {
        let partitions = dead::partitions(&mut conn, &config, &keys).await?;
        let found = dead::search(
            &mut conn,
            &partitions,
            &filter,
            RECENT,
            None,
            budget(&state, false),
        )
        .await?;
        // Messages waiting for a retry, with their failures so far, from
        // each partition until there are enough.
        let mut retrying: Vec<Value> = Vec::new();
        for p in &partitions {
            if retrying.len() >= RECENT {
                break;
            }
            let (_, flat): (String, Vec<String>) = redis::cmd("HSCAN")
                .arg(p.errors(&name))
                .arg(0)
                .arg("COUNT")
                .arg(RECENT)
                .query_async(&mut conn)
                .await?;
            retrying.extend(flat.chunks_exact(2).map(|kv| {
                let history: Value = serde_json::from_str(&kv[1]).unwrap_or(Value::Null);
                json!({ "entry": p.dead_letter_ref(&kv[0]), "history": history })
            }));
        }
        retrying.truncate(RECENT);
        anyhow::Ok((dead::list_json(&found.letters), retrying))
    };
    let (dead, retrying) = match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(found)) => found,
        _ => return error(StatusCode::SERVICE_UNAVAILABLE, "Redis could not be read"),
    };
    Json(json!({
        "name": name,
        "settings": settings,
        "dead_letters": dead,
        "retrying": retrying,
    }))
    .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct HistoryParams {
    queue: Option<String>,
}

/// The charts' samples: every queue's, or one queue's.
async fn history(
    State(state): State<Arc<AdminState>>,
    Query(params): Query<HistoryParams>,
) -> Response {
    let mut samples = state
        .history
        .lock()
        .expect("history lock")
        .json(params.queue.as_deref());
    samples["now"] = json!(super::sampler::unix_now());
    Json(samples).into_response()
}

async fn dead_list(
    State(state): State<Arc<AdminState>>,
    Query(params): Query<FilterParams>,
) -> Response {
    let filter = match params.filter() {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let config = state.config.load_full();
    let Some(mut conn) = state.conn().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Redis does not answer");
    };
    let keys = state.keys(&config);
    let limit = params.limit.unwrap_or(100).min(1000);
    let below = params.below.as_deref().filter(|b| !b.is_empty());
    if let Some(below) = below
        && let Err(why) = dead::checked_id(below)
    {
        return error(StatusCode::BAD_REQUEST, why.to_string());
    }
    let found = async {
        let partitions = dead::partitions(&mut conn, &config, &keys).await?;
        dead::search(
            &mut conn,
            &partitions,
            &filter,
            limit,
            below,
            budget(&state, false),
        )
        .await
    };
    match found.await {
        Ok(found) => Json(json!({
            "dead_letters": dead::list_json(&found.letters),
            "limit": limit,
            "examined": found.examined,
            "more_below": found.more_below,
        }))
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

async fn dead_show(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    if let Err(why) = dead::checked_id(&id) {
        return error(StatusCode::BAD_REQUEST, why.to_string());
    }
    let config = state.config.load_full();
    let Some(mut conn) = state.conn().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Redis does not answer");
    };
    match dead::show(&mut conn, &state.keys(&config), &id).await {
        Ok(Some(record)) => {
            let mut body = dead::record_json(&record);
            // The body pretty-printed when it is JSON, for the page.
            if let Some(text) = body["message"]["body"].as_str()
                && let Ok(v) = serde_json::from_str::<Value>(text)
            {
                body["body_pretty"] =
                    Value::String(serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            Json(body).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("{id} is not a dead letter (replayed or deleted already?)"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hosts_it_serves_are_answered() {
        let hosts = vec!["switchyard.internal".to_string()];
        for ok in [
            "localhost",
            "localhost:9464",
            "LOCALHOST.",
            "127.0.0.1:9464",
            "10.0.0.5",
            "[::1]:9464",
            "[fe80::1]",
            "switchyard.internal:9464",
            "Switchyard.Internal",
        ] {
            assert!(host_allowed(Some(ok), &hosts), "{ok} refused");
        }
        for bad in [
            "evil.example",
            "evil.example:9464",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "switchyard.internal.evil.example",
            "[not-an-ip]",
            "",
        ] {
            assert!(!host_allowed(Some(bad), &hosts), "{bad} allowed");
        }
        assert!(!host_allowed(None, &hosts));
    }
}
