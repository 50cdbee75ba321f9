//! A blocking HTTP client over `wasi:http/outgoing-handler`, and the rule
//! for what an answer means.
//!
//! The host sends the request: only to a destination the queue's
//! `allowed_hosts` grants (else [`Error::Denied`]), within the queue's
//! `http_timeout` and the handler's deadline, on a pooled keep-alive
//! connection. Redirects are followed only when asked
//! ([`Request::follow_redirects`]), and each hop is checked by the host
//! again.

use std::time::{Duration, SystemTime};

use crate::Failure;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::{OutputStream, StreamError};

/// Bytes of a response body the client reads unless told otherwise (the
/// queue's `max_response_kib` may stop it sooner).
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// Bytes of an answer quoted in a failure's reason.
const EXCERPT: usize = 300;

/// The most bytes one write to a `wasi:io` output stream may carry.
const WRITE_CHUNK: usize = 4096;

/// A request, built and then [sent](Request::send).
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    redirects: u8,
    max_body: usize,
}

/// A response, its body read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request cannot be sent as written: a URL or header the client
    /// or the host does not accept.
    Invalid(String),
    /// The host refused it: a destination the queue is not granted, an
    /// address that is not public, or more requests than a call may send.
    /// The host's log says which.
    Denied,
    /// It failed on the way: DNS, connecting, TLS, a timeout, a connection
    /// closed early, a response over the size bound.
    Transport(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Invalid(e) => write!(f, "invalid request: {e}"),
                        Error::Denied => f.write_str(
                "denied by the host (not in allowed_hosts, a non-public address, or over max_requests_per_call; the host's log says which)",
            ),
            Error::Transport(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// What a failed request means for the message: a request that cannot
    /// be sent as written, or to a destination that is not granted, is
    /// rejected (it will not succeed until someone changes the data or the
    /// grant, and a dead letter can be replayed then); anything on the way
    /// is retried.
    pub fn into_failure(self, what: &str) -> Failure {
        match self {
            Error::Invalid(_) | Error::Denied => Failure::reject(format!("{what}: {self}")),
            Error::Transport(_) => Failure::retry(format!("{what}: {self}")),
        }
    }

    fn from_code(code: ErrorCode) -> Error {
        let text = match code {
            ErrorCode::HttpRequestDenied => return Error::Denied,
            ErrorCode::HttpRequestUriInvalid => return Error::Invalid("the URI".into()),
            ErrorCode::DnsError(_) => "the name did not resolve".into(),
            ErrorCode::DnsTimeout => "resolving the name timed out".into(),
            ErrorCode::ConnectionRefused => "connection refused".into(),
            ErrorCode::ConnectionTimeout => "connecting timed out".into(),
            ErrorCode::ConnectionReadTimeout => "the answer took too long".into(),
            ErrorCode::ConnectionTerminated => "the connection closed early".into(),
            ErrorCode::ConnectionLimitReached => {
                "no connection to the destination was free in time".into()
            }
            ErrorCode::DestinationUnavailable => "the destination is unreachable".into(),
            ErrorCode::TlsProtocolError => "TLS failed".into(),
            ErrorCode::TlsCertificateError => "the TLS certificate was refused".into(),
            ErrorCode::HttpResponseBodySize(limit) => match limit {
                Some(n) => format!("the answer's body is over {n} bytes"),
                None => "the answer's body is too large".into(),
            },
            ErrorCode::HttpProtocolError => "the answer is not valid HTTP".into(),
            ErrorCode::InternalError(Some(e)) => e,
            other => format!("{other:?}"),
        };
        Error::Transport(text)
    }
}

impl Request {
    /// A request with `method` (`GET`, `POST`, ...) to an absolute
    /// `http://` or `https://` URL.
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            redirects: 0,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    pub fn put(url: &str) -> Self {
        Self::new("PUT", url)
    }

    pub fn patch(url: &str) -> Self {
        Self::new("PATCH", url)
    }

    pub fn delete(url: &str) -> Self {
        Self::new("DELETE", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// `Authorization: Basic <user:password in base64>`.
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", format!("Basic {credentials}"))
    }

    /// `Idempotency-Key: <key>`: the message id, so that the receiver
    /// recognises a redelivery.
    pub fn idempotency_key(self, key: &str) -> Self {
        self.header("idempotency-key", key)
    }

    /// A JSON body.
    pub fn json(self, value: &impl serde::Serialize) -> Self {
        self.json_text(serde_json::to_string(value).expect("a JSON value serialises"))
    }

    /// A body that already is JSON text.
    pub fn json_text(mut self, text: String) -> Self {
        self.body = text.into_bytes();
        self.header("content-type", "application/json")
    }

    /// A body of any type.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.header("content-type", content_type)
    }

    /// Follows up to `max` redirects (none by default). 303, and 301 or 302
    /// after a POST, continue as a GET without body; 307 and 308 repeat
    /// the request. The host checks each hop against the grant.
    pub fn follow_redirects(mut self, max: u8) -> Self {
        self.redirects = max;
        self
    }

    /// Reads at most `bytes` of the response body (the queue's
    /// `max_response_kib` may stop it sooner).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, Error> {
        let mut request = self;
        let mut hops = 0;
        loop {
            let response = request.send_once()?;
            let location = response.header("location").map(str::to_owned);
            let Some(location) =
                location.filter(|_| matches!(response.status, 301..=303 | 307 | 308))
            else {
                return Ok(response);
            };
            if hops == request.redirects {
                return Ok(response);
            }
            hops += 1;
            request.url = resolve(&request.url, &location)?;
            let keeps_method = matches!(response.status, 307 | 308)
                || (request.method != "POST" && response.status != 303);
            if !keeps_method {
                request.method = "GET".into();
                request.body.clear();
                request
                    .headers
                    .retain(|(k, _)| k != "content-type" && k != "content-length");
            }
        }
    }

    fn send_once(&self) -> Result<Response, Error> {
        let url = Url::parse(&self.url)?;
        let mut headers = self.headers.clone();
        if !headers.iter().any(|(k, _)| k == "user-agent") {
            headers.push((
                "user-agent".into(),
                concat!("switchyard-plugin/", env!("CARGO_PKG_VERSION")).into(),
            ));
        }
        headers.retain(|(k, _)| k != "content-length");
        if !self.body.is_empty() {
            headers.push(("content-length".into(), self.body.len().to_string().into()));
        }
        let fields =
            Fields::from_list(&headers).map_err(|e| Error::Invalid(format!("a header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        };
        let invalid = |what: &str| Error::Invalid(format!("the {what} of {}", url.shown()));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&url.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&url.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&url.path_and_query))
            .map_err(|()| invalid("path"))?;
        let outgoing = request.body().expect("a request's body is taken once");
        // A body the stream takes in one write goes in whole before the
        // request is handed over, so the host sends it with the head, in one
        // piece. A larger one streams to the host while it sends the
        // request; a write that fails then usually means the request failed,
        // which the response future says better.
        let stream = outgoing.write().expect("a body's stream is taken once");
        let whole = stream
            .check_write()
            .is_ok_and(|room| room >= self.body.len() as u64);
        let (pending, written, finished) = if whole {
            let written = if self.body.is_empty() {
                Ok(())
            } else {
                stream
                    .write(&self.body)
                    .map_err(|e| stream_error(e, "sending the body"))
            };
            drop(stream);
            let finished = OutgoingBody::finish(outgoing, None).map_err(Error::from_code);
            let pending = outgoing_handler::handle(request, None).map_err(Error::from_code)?;
            (pending, written, finished)
        } else {
            let pending = outgoing_handler::handle(request, None).map_err(Error::from_code)?;
            let written = write_body(&stream, &self.body);
            drop(stream);
            let finished = OutgoingBody::finish(outgoing, None).map_err(Error::from_code);
            (pending, written, finished)
        };
        let response = loop {
            match pending.get() {
                Some(result) => {
                    break result
                        .expect("a response is taken once")
                        .map_err(Error::from_code)?;
                }
                None => pending.subscribe().block(),
            }
        };
        written?;
        finished?;

        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response.consume().expect("a response's body is taken once");
        let body = read_body(&incoming, self.max_body)?;
        IncomingBody::finish(incoming);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn write_body(stream: &OutputStream, bytes: &[u8]) -> Result<(), Error> {
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| stream_error(e, "sending the body"))?;
    }
    Ok(())
}

fn read_body(body: &IncomingBody, max: usize) -> Result<Vec<u8>, Error> {
    let stream = body.stream().expect("a body's stream is taken once");
    let mut read = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if read.len() + chunk.len() > max {
                    return Err(Error::Transport(format!(
                        "the answer's body is over {max} bytes"
                    )));
                }
                read.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(read),
            Err(e) => return Err(stream_error(e, "reading the answer")),
        }
    }
}

fn stream_error(e: StreamError, doing: &str) -> Error {
    match e {
        StreamError::Closed => Error::Transport(format!("{doing}: the connection closed")),
        StreamError::LastOperationFailed(e) => {
            match crate::bindings::wasi::http::types::http_error_code(&e) {
                Some(code) => Error::from_code(code),
                None => Error::Transport(format!("{doing}: {}", e.to_debug_string())),
            }
        }
    }
}

impl Response {
    /// The first value of a header, by name, without regard to case, if it
    /// is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// How long the server asks to wait (`Retry-After`, in seconds or as an
    /// HTTP date).
    pub fn retry_after(&self) -> Option<Duration> {
        let value = self.header("retry-after")?.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        let at = httpdate::parse_http_date(value).ok()?;
        Some(
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }

    /// `HTTP 422 Unprocessable Entity: <the start of the body>`.
    pub fn describe(&self) -> String {
        let mut text = format!("HTTP {}", self.status);
        if let Some(reason) = reason_phrase(self.status) {
            text.push(' ');
            text.push_str(reason);
        }
        let body = String::from_utf8_lossy(&self.body);
        let body = body.trim();
        if !body.is_empty() {
            text.push_str(": ");
            let mut end = body.len().min(EXCERPT);
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            text.push_str(&body[..end]);
            if end < body.len() {
                text.push('…');
            }
        }
        text
    }
}

/// `text` percent-encoded for a URL's path segment or query value: every
/// byte but ASCII letters, digits and `-._~` is escaped.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What an answer means for the message, the same for every plugin that
/// calls a remote API:
///
/// - 2xx: done, `Ok(response)`;
/// - 408, 429 and 5xx: the server cannot take it now: retry, after its
///   `Retry-After` if it gives one;
/// - any other status (a 4xx, a redirect not followed): the request is
///   wrong and will stay wrong: reject, with the status and the start of
///   the answer.
pub fn check(response: Response, what: &str) -> Result<Response, Failure> {
    match response.status {
        200..=299 => Ok(response),
        408 | 429 | 500..=599 => {
            let reason = format!("{what}: {}", response.describe());
            Err(match response.retry_after() {
                Some(delay) => Failure::retry_after(reason, delay),
                None => Failure::retry(reason),
            })
        }
        _ => Err(Failure::reject(format!("{what}: {}", response.describe()))),
    }
}

fn reason_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

/// An absolute URL, split as `wasi:http` takes it.
#[derive(Debug)]
struct Url {
    scheme: Scheme,
    authority: String,
    path_and_query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url, Error> {
        let invalid = |why: &str| Error::Invalid(format!("the URL {url:?}: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("not absolute"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(invalid("only http and https are supported")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials belong in a header, not the URL"));
        }
        let mut path = &rest[end..];
        if let Some(i) = path.find('#') {
            path = &path[..i];
        }
        let path_and_query = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Ok(Url {
            scheme,
            authority: authority.to_owned(),
            path_and_query,
        })
    }

    fn shown(&self) -> String {
        let scheme = match &self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Other(s) => s,
        };
        format!("{scheme}://{}", self.authority)
    }
}

/// The URL a `Location` names, relative to `base`.
fn resolve(base: &str, location: &str) -> Result<String, Error> {
    if location.contains("://") {
        return Ok(location.to_owned());
    }
    let url = Url::parse(base)?;
    let scheme = url.shown();
    let scheme = &scheme[..scheme.find(':').unwrap_or(0)];
    Ok(if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", url.shown())
    } else {
        let path = url.path_and_query.split('?').next().unwrap_or("/");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{dir}{location}", url.shown())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_as_wasi_http_takes_them() {
        let u = Url::parse("https://api.example.com:8443/v2/x?y=1#frag").unwrap();
        assert!(matches!(u.scheme, Scheme::Https));
        assert_eq!(u.authority, "api.example.com:8443");
        assert_eq!(u.path_and_query, "/v2/x?y=1");
        assert_eq!(
            Url::parse("http://h?q").unwrap().path_and_query,
            "/?q".to_string()
        );
        assert!(Url::parse("ftp://h/").is_err());
        assert!(Url::parse("http://user:pw@h/").is_err());
        assert!(Url::parse("/relative").is_err());
    }

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode("chat-1/2 é?&"), "chat-1%2F2%20%C3%A9%3F%26");
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = "http://a.example:8080/x/y?q=1";
        assert_eq!(resolve(base, "https://b/z").unwrap(), "https://b/z");
        assert_eq!(resolve(base, "//c/z").unwrap(), "http://c/z");
        assert_eq!(resolve(base, "/z").unwrap(), "http://a.example:8080/z");
        assert_eq!(resolve(base, "z").unwrap(), "http://a.example:8080/x/z");
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert!(check(response(201, &[], ""), "x").is_ok());
        match check(response(429, &[("Retry-After", "7")], ""), "posting") {
            Err(Failure::Retry(r)) => {
                assert_eq!(r.delay_ms, Some(7000));
                assert_eq!(r.reason, "posting: HTTP 429 Too Many Requests");
            }
            other => panic!("{other:?}"),
        }
        match check(response(503, &[], "down"), "x") {
            Err(Failure::Retry(r)) => assert_eq!(r.delay_ms, None),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check(response(408, &[], ""), "x"),
            Err(Failure::Retry(_))
        ));
        match check(response(422, &[], &"e".repeat(1000)), "x") {
            Err(Failure::Reject(r)) => {
                assert!(r.starts_with("x: HTTP 422 Unprocessable Entity: eee"));
                assert!(r.len() < 400, "{}", r.len());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check(response(302, &[("location", "/x")], ""), "x"),
            Err(Failure::Reject(_))
        ));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = response(503, &[("retry-after", &later)], "")
            .retry_after()
            .unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        let past = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(
            response(503, &[("retry-after", past)], "").retry_after(),
            Some(Duration::ZERO)
        );
        assert_eq!(
            response(503, &[("retry-after", "soon")], "").retry_after(),
            None
        );
    }
}
