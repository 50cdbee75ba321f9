//! What `switchyard invoke` does with a plugin's requests: each is
//! recorded (method, URL, what came of it), and, with canned answers, a
//! request is answered from them instead of being sent. The grant and the
//! limits apply first, as on a queue.

use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use wasmtime_wasi_http::WasiBody;

/// One request a call made, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeenRequest {
    pub method: String,
    pub url: String,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// Why none came (denied, refused, no canned answer...).
    pub error: Option<String>,
}

/// The requests of the calls, in order.
#[derive(Debug, Default)]
pub struct Observed {
    seen: Mutex<Vec<SeenRequest>>,
}

impl Observed {
    pub(super) fn record(&self, request: SeenRequest) {
        self.seen.lock().expect("observed lock").push(request);
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("observed lock").clone()
    }
}

/// An answer of a file of canned answers: the first whose method (if it
/// has one) is the request's and whose `url` starts the request's URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedAnswer {
    #[serde(default)]
    pub method: Option<String>,
    pub url: String,
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn ok() -> u16 {
    200
}

/// Canned answers, in the order of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Canned(pub Vec<CannedAnswer>);

impl Canned {
    /// The answer to `method` `url`, if one is canned.
    pub(super) fn answer(&self, method: &str, url: &str) -> Option<http::Response<WasiBody>> {
        let a = self.0.iter().find(|a| {
            a.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && url.starts_with(&a.url)
        })?;
        let mut response = http::Response::builder().status(a.status);
        for (k, v) in &a.headers {
            response = response.header(k, v);
        }
        let body = http_body_util::Full::new(Bytes::from(a.body.clone()))
            .map_err(|never| match never {})
            .boxed_unsync();
        response.body(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_answer_is_given() {
        let canned: Canned = serde_json::from_str(
            r#"[
                {"method": "GET", "url": "https://api.example.com/tickets", "body": "[]"},
                {"url": "https://api.example.com/", "status": 201, "headers": {"x-id": "7"}}
            ]"#,
        )
        .unwrap();
        let get = canned
            .answer("get", "https://api.example.com/tickets?x=1")
            .unwrap();
        assert_eq!(get.status(), 200);
        let post = canned
            .answer("POST", "https://api.example.com/tickets")
            .unwrap();
        assert_eq!(post.status(), 201);
        assert_eq!(post.headers()["x-id"], "7");
        assert!(canned.answer("GET", "https://other.example.com/").is_none());
    }
}
