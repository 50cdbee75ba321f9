//! What the dashboard's API and its actions share: who a token lets in,
//! how a refusal is answered, a filter as the query gives it, and how much
//! one request may make Redis read.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::dead::{self, Filter};
use super::state::AdminState;

/// What one dashboard request may make Redis read of the dead letters: at
/// most [`SEARCH_EXAMINED`] in pages of [`SEARCH_PAGE`], one page at a time
/// across the whole admin server (`AdminState::scans`). A search that
/// stops there says where to go on. So however many searches run at once,
/// Redis spends at most one page's work on them before it serves anyone
/// else.
const SEARCH_PAGE: usize = 100;
const SEARCH_EXAMINED: usize = 5_000;

pub(super) fn budget(state: &AdminState, whole: bool) -> dead::Budget<'_> {
    dead::Budget {
        page: SEARCH_PAGE,
        max_examined: if whole { 0 } else { SEARCH_EXAMINED },
        turns: Some(&state.scans),
    }
}

/// What a request's token lets it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Admin,
}

impl AdminState {
    /// The access `headers`' bearer token gives, if any.
    pub(super) fn access(&self, headers: &HeaderMap) -> Option<Access> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?;
        let matches = |t: &Option<String>| {
            t.as_ref()
                .is_some_and(|t| same(given.as_bytes(), t.as_bytes()))
        };
        if matches(&self.token) {
            Some(Access::Admin)
        } else if matches(&self.read_token) {
            Some(Access::Read)
        } else {
            None
        }
    }
}

/// Equal in time whatever the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// A refusal: its status and what it says, as `{"error": ...}`.
#[derive(Debug)]
pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct FilterParams {
    queue: Option<String>,
    reason: Option<String>,
    #[serde(rename = "type")]
    message_type: Option<String>,
    /// `1h`, `30m`, `7d`.
    since: Option<String>,
    older_than: Option<String>,
    pub(super) limit: Option<usize>,
    /// Search on below this dead letter (what a search that stopped at its
    /// budget answered as `more_below`).
    pub(super) below: Option<String>,
}

impl FilterParams {
    pub(super) fn filter(&self) -> Result<Filter, ApiError> {
        let duration = |name: &str, text: &Option<String>| -> Result<Option<Duration>, ApiError> {
            match text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                None => Ok(None),
                Some(t) => humantime::parse_duration(t).map(Some).map_err(|_| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("{name}: {t:?} is not a duration like 30m, 1h or 7d"),
                    )
                }),
            }
        };
        let text = |t: &Option<String>| t.clone().filter(|t| !t.trim().is_empty());
        Ok(Filter {
            queue: text(&self.queue),
            reason: text(&self.reason),
            message_type: text(&self.message_type),
            since: duration("since", &self.since)?,
            older_than: duration("older_than", &self.older_than)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
    }
}
