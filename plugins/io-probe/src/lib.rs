//! Test plugin (contract 0.2.0): runs the steps its message's body lists,
//! in order, and reports what each did.
//!
//! The body is `{"steps": [...], "then": "report" | "ok" | "retry" | "trap"}`.
//! Each step is one object:
//!
//! - `{"http": {"method", "url", "headers": {..}, "body", "follow"}}`:
//!   `{"status", "bytes", "body"}` (the first 200 bytes), or `{"error"}`
//!   (`denied` when the host denied it); a header value `config:KEY` is
//!   the queue's setting KEY; with `"leave_open": true`, a GET whose
//!   answer is never read nor dropped: `{"status", "left_open"}`;
//! - `{"kv": "get" | "set" | "delete" | "exists" | "increment" | "cas" |
//!   "list", "bucket", "key", "value", "delta", "expect"}`: the value or
//!   `{"error"}`;
//! - `{"publish": {"type", "body", "headers": {..}}}`, or
//!   `{"publish": "itself"}` (the message's own type and body): the id or
//!   `{"error"}`;
//! - `{"config": key}`: the setting;
//! - `{"sql": "query" | "execute", "statement", "params": [..]}`: rows
//!   (`{"columns", "rows"}`) or the count affected, or `{"error"}`; a
//!   param is JSON: null, a boolean, an integer (int64), a float, a string,
//!   or `{"int32": n}`, `{"binary": [bytes]}`;
//! - `{"sql": "begin" | "commit" | "rollback"}`: `"ok"` or `{"error"}`;
//! - `{"mail": {"from", "to": [..], "cc", "bcc", "reply_to", "subject",
//!   "text", "html", "headers": {..}}}`: the Message-ID, or `{"error"}`.
//!
//! With `then` = `report` (the default) it rejects with the results as the
//! reason, so a test reads them in the dead letter; `ok` succeeds, `retry`
//! retries, `trap` traps. Every result is also logged as `probe <results>`.

use serde_json::{Value, json};
use switchyard_plugin::http::{Error, Request};
use switchyard_plugin::kv::{self, atomics};
use switchyard_plugin::{Failure, Handler, Message, config, log};
use switchyard_plugin::{mail, sql};

struct Probe;

impl Handler for Probe {
    fn handle(message: Message) -> Result<(), Failure> {
        let body: Value = serde_json::from_str(&message.body).unwrap_or_default();
        let steps = body["steps"].as_array().cloned().unwrap_or_default();
        let results: Vec<Value> = steps.iter().map(|s| step(&message, s)).collect();
        let report = Value::Array(results).to_string();
        log::info(&format!("probe {report}"));
        match body["then"].as_str().unwrap_or("report") {
            "ok" => Ok(()),
            "retry" => Err(Failure::retry(report)),
            "trap" => panic!("probe: trapping as asked"),
            _ => Err(Failure::reject(report)),
        }
    }
}

fn step(message: &Message, step: &Value) -> Value {
    if let Some(h) = step.get("http") {
        return http(h);
    }
    if let Some(op) = step.get("kv").and_then(Value::as_str) {
        return keyvalue(op, step);
    }
    if let Some(op) = step.get("sql").and_then(Value::as_str) {
        return database(op, step);
    }
    if let Some(m) = step.get("mail") {
        return send_mail(m);
    }
    if let Some(p) = step.get("publish") {
        let (kind, body, headers) = if p == "itself" {
            (message.message_type.clone(), message.body.clone(), vec![])
        } else {
            (
                p["type"].as_str().unwrap_or_default().to_owned(),
                p["body"].as_str().unwrap_or("{}").to_owned(),
                strings(&p["headers"]),
            )
        };
        return match switchyard_plugin::bindings::switchyard::plugin::publish::publish(
            &kind, &body, &headers,
        ) {
            Ok(id) => json!({ "id": id }),
            Err(e) => json!({ "error": e }),
        };
    }
    if let Some(key) = step.get("config").and_then(Value::as_str) {
        return json!(config::get(key));
    }
    json!({ "error": "unknown step" })
}

fn strings(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends a GET to `url` and leaves its answer unread: the response and its
/// body are never dropped (a plugin holding on to them across calls).
fn http_left_open(url: &str) -> Value {
    use switchyard_plugin::bindings::wasi::http::outgoing_handler;
    use switchyard_plugin::bindings::wasi::http::types::{
        Fields, OutgoingBody, OutgoingRequest, Scheme,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return json!({ "error": "no scheme" });
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(&path));
    let body = request.body().expect("the body");
    let _ = OutgoingBody::finish(body, None);
    let future = match outgoing_handler::handle(request, None) {
        Ok(f) => f,
        Err(e) => return json!({ "error": format!("{e:?}") }),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => {
            let status = response.status();
            let body = response.consume().expect("the body");
            // Never dropped: the host must close them when the call ends.
            std::mem::forget(body);
            std::mem::forget(response);
            json!({ "status": status, "left_open": true })
        }
        Some(Ok(Err(e))) => json!({ "error": format!("{e:?}") }),
        other => json!({ "error": format!("{other:?}") }),
    }
}

fn http(h: &Value) -> Value {
    if h["leave_open"].as_bool() == Some(true) {
        return http_left_open(h["url"].as_str().unwrap_or_default());
    }
    let mut request = Request::new(
        h["method"].as_str().unwrap_or("GET"),
        h["url"].as_str().unwrap_or_default(),
    );
    for (k, v) in strings(&h["headers"]) {
        let v = match v.strip_prefix("config:") {
            Some(key) => config::get(key).unwrap_or_default(),
            None => v,
        };
        request = request.header(&k, v);
    }
    if let Some(body) = h["body"].as_str() {
        request = request.body("application/json", body);
    }
    if let Some(n) = h["follow"].as_u64() {
        request = request.follow_redirects(n as u8);
    }
    match request.send() {
        Ok(r) => {
            let text = String::from_utf8_lossy(&r.body);
            let mut end = text.len().min(200);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            json!({ "status": r.status, "bytes": r.body.len(), "body": &text[..end] })
        }
        Err(Error::Denied) => json!({ "error": "denied" }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn keyvalue(op: &str, step: &Value) -> Value {
    let bucket = match kv::open(step["bucket"].as_str().unwrap_or("default")) {
        Ok(b) => b,
        Err(e) => return json!({ "error": format!("open: {}", kv::error_text(&e)) }),
    };
    let key = step["key"].as_str().unwrap_or("k");
    let value = step["value"].as_str().unwrap_or("").as_bytes();
    let text = |v: Option<Vec<u8>>| json!(v.map(|v| String::from_utf8_lossy(&v).into_owned()));
    let result = match op {
        "get" => bucket.get(key).map(text),
        "set" => bucket.set(key, value).map(|()| json!("ok")),
        "delete" => bucket.delete(key).map(|()| json!("ok")),
        "exists" => bucket.exists(key).map(|b| json!(b)),
        "increment" => {
            atomics::increment(&bucket, key, step["delta"].as_i64().unwrap_or(1)).map(|n| json!(n))
        }
        "list" => bucket
            .list_keys(step["cursor"].as_str())
            .map(|r| json!({ "keys": r.keys, "cursor": r.cursor })),
        "cas" => {
            let cas = match atomics::Cas::new(&bucket, key) {
                Ok(c) => c,
                Err(e) => return json!({ "error": format!("cas: {}", kv::error_text(&e)) }),
            };
            let current = cas.current().ok().flatten();
            let expected = step["expect"].as_str().map(|s| s.as_bytes().to_vec());
            if current != expected {
                return json!({ "current": text(current) });
            }
            return match atomics::swap(cas, value) {
                Ok(()) => json!("swapped"),
                Err(atomics::CasError::CasFailed(_)) => json!("changed"),
                Err(atomics::CasError::StoreError(e)) => json!({ "error": kv::error_text(&e) }),
            };
        }
        _ => return json!({ "error": "unknown kv op" }),
    };
    result.unwrap_or_else(|e| json!({ "error": kv::error_text(&e) }))
}

switchyard_plugin::export!(Probe);

fn sql_error(e: &sql::Error) -> Value {
    let kind = match e {
        sql::Error::NotGranted => "not-granted",
        sql::Error::Database(d) if d.transient => "database-transient",
        sql::Error::Database(_) => "database",
        sql::Error::Unavailable(_) => "unavailable",
        sql::Error::Timeout(_) => "timeout",
        sql::Error::Invalid(_) => "invalid",
    };
    json!({ "error": sql::error_text(e), "kind": kind })
}

fn db_value(v: &Value) -> sql::Value {
    match v {
        Value::Null => sql::Value::Null,
        Value::Bool(b) => sql::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => sql::Value::Int64(i),
            None => sql::Value::Floating64(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => sql::Value::Str(s.clone()),
        Value::Object(o) if o.contains_key("int32") => {
            sql::Value::Int32(o["int32"].as_i64().unwrap_or_default() as i32)
        }
        Value::Object(o) if o.contains_key("binary") => sql::Value::Binary(
            o["binary"]
                .as_array()
                .map(|b| b.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect())
                .unwrap_or_default(),
        ),
        other => sql::Value::Str(other.to_string()),
    }
}

fn json_value(v: &sql::Value) -> Value {
    match v {
        sql::Value::Null => Value::Null,
        sql::Value::Boolean(b) => json!(b),
        sql::Value::Int32(n) => json!(n),
        sql::Value::Int64(n) => json!(n),
        sql::Value::Floating64(f) => json!(f),
        sql::Value::Str(s) => json!(s),
        sql::Value::Binary(b) => json!({ "binary": b }),
    }
}

fn database(op: &str, step: &Value) -> Value {
    let statement = step["statement"].as_str().unwrap_or_default();
    let params: Vec<sql::Value> = step["params"]
        .as_array()
        .map(|p| p.iter().map(db_value).collect())
        .unwrap_or_default();
    let done = |r: Result<(), sql::Error>| r.map_or_else(|e| sql_error(&e), |()| json!("ok"));
    match op {
        "query" => match sql::query(statement, &params) {
            Ok(set) => json!({
                "columns": set.columns.iter().map(|c| json!([c.name, c.data_type])).collect::<Vec<_>>(),
                "rows": set.rows.iter().map(|r| r.iter().map(json_value).collect::<Vec<_>>()).collect::<Vec<_>>(),
            }),
            Err(e) => sql_error(&e),
        },
        "execute" => sql::execute(statement, &params).map_or_else(|e| sql_error(&e), |n| json!(n)),
        "begin" => done(sql::begin()),
        "commit" => done(sql::commit()),
        "rollback" => done(sql::rollback()),
        other => json!({ "error": format!("unknown sql op {other:?}") }),
    }
}

fn send_mail(m: &Value) -> Value {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut email = mail::new(
        m["from"].as_str().unwrap_or_default(),
        list(&m["to"]),
        m["subject"].as_str().unwrap_or_default(),
    );
    email.cc = list(&m["cc"]);
    email.bcc = list(&m["bcc"]);
    email.reply_to = m["reply_to"].as_str().map(str::to_owned);
    email.text = m["text"].as_str().map(str::to_owned);
    email.html = m["html"].as_str().map(str::to_owned);
    email.headers = strings(&m["headers"]);
    match mail::send(&email) {
        Ok(id) => json!(id),
        Err(e) => {
            let kind = match &e {
                mail::Error::NotGranted => "not-granted",
                mail::Error::Invalid(_) => "invalid",
                mail::Error::Permanent(_) => "permanent",
                mail::Error::Transient(_) => "transient",
            };
            json!({ "error": mail::error_text(&e), "kind": kind })
        }
    }
}
