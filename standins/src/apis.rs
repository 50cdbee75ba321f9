//! What each API answers, and the objects it keeps.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{Api, Objects, Recorded};

/// How far a signature's timestamp may be from the receiver's clock.
const TOLERANCE_SECS: u64 = 300;

pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub refused: Option<String>,
}

fn ok(status: u16, body: Value) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body,
        refused: None,
    }
}

fn refuse(status: u16, body: Value, why: impl Into<String>) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body,
        refused: Some(why.into()),
    }
}

pub(crate) fn answer(api: &Api, r: &Recorded, objects: &mut Objects) -> Answer {
    match api {
        Api::Echo => ok(200, json!({ "ok": true })),
        Api::WebHook { secret } => webhook(secret, r, objects),
        Api::Zendesk { email, token } => zendesk(email, token, r, objects),
        Api::Salesforce { token } => salesforce(token, r, objects),
        Api::Tickets { token } => tickets(token, r, objects),
    }
}

/// The value of the `Switchyard-Signature` header for `body` sent at
/// `timestamp` (Unix seconds): `t=<timestamp>,v1=<hex HMAC-SHA256 of
/// "<timestamp>.<body>" under secret>`.
pub fn webhook_signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

/// Checks a `Switchyard-Signature` header the way a receiver should: the
/// timestamp within five minutes of `now`, and one of its `v1` signatures
/// (there may be several while a secret is rotated) the HMAC of
/// `"<t>.<body>"`, compared in constant time.
pub fn verify_signature(secret: &str, header: &str, body: &str, now: u64) -> Result<(), String> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let t = timestamp.ok_or("no timestamp in the signature header")?;
    if t.abs_diff(now) > TOLERANCE_SECS {
        return Err(format!("the timestamp {t} is more than 5 minutes from now"));
    }
    for s in signatures {
        let Some(bytes) = unhex(s) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("{t}.{body}").as_bytes());
        if mac.verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err("no v1 signature matches".into())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn webhook(secret: &str, r: &Recorded, objects: &mut Objects) -> Answer {
    if r.method != "POST" {
        return refuse(405, json!({ "error": "POST only" }), "not a POST");
    }
    let Some(header) = r.header("switchyard-signature") else {
        return refuse(
            401,
            json!({ "error": "no signature" }),
            "no Switchyard-Signature header",
        );
    };
    if let Err(why) = verify_signature(secret, header, &r.body, now()) {
        return refuse(401, json!({ "error": "bad signature" }), why);
    }
    let event = r.json();
    if !event.is_object() {
        return refuse(
            400,
            json!({ "error": "the body is not a JSON object" }),
            "not JSON",
        );
    }
    let Some(key) = r.header("idempotency-key") else {
        return refuse(
            400,
            json!({ "error": "no Idempotency-Key" }),
            "no Idempotency-Key",
        );
    };
    if objects.by_key.contains_key(key) {
        return ok(200, json!({ "received": true, "duplicate": true }));
    }
    objects.by_key.insert(key.to_owned(), objects.list.len());
    objects.list.push(event);
    ok(200, json!({ "received": true }))
}

fn zendesk(email: &str, token: &str, r: &Recorded, objects: &mut Objects) -> Answer {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{email}/token:{token}"))
    );
    if r.header("authorization") != Some(expected.as_str()) {
        return refuse(
            401,
            json!({ "error": "Couldn't authenticate you" }),
            "bad credentials",
        );
    }
    let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
    if path != "/api/v2/tickets.json" && path != "/api/v2/tickets" {
        return refuse(
            404,
            json!({ "error": "InvalidEndpoint", "description": "Not found" }),
            "unknown endpoint",
        );
    }
    match r.method.as_str() {
        "GET" => {
            let external = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("external_id="))
                .map(percent_decode);
            let tickets: Vec<Value> = objects
                .list
                .iter()
                .filter(|t| external.as_deref().is_none_or(|e| t["external_id"] == e))
                .cloned()
                .collect();
            ok(
                200,
                json!({ "tickets": tickets, "count": tickets.len(), "next_page": null }),
            )
        }
        "POST" => {
            let body = r.json();
            let ticket = &body["ticket"];
            if !ticket.is_object() {
                return refuse(
                    400,
                    json!({ "error": "InvalidValue", "description": "ticket is required" }),
                    "no ticket object",
                );
            }
            let comment = &ticket["comment"];
            let has_comment = ["body", "html_body"]
                .iter()
                .any(|k| comment[k].as_str().is_some_and(|s| !s.trim().is_empty()));
            if !has_comment {
                return refuse(
                    422,
                    json!({
                        "error": "RecordInvalid",
                        "description": "Record validation errors",
                        "details": { "base": [{ "description": "Description: cannot be blank" }] }
                    }),
                    "no comment body",
                );
            }
            let mut created = ticket.clone();
            let id = objects.list.len() + 1;
            created["id"] = json!(id);
            created["url"] = json!(format!("/api/v2/tickets/{id}.json"));
            created["status"] = json!("new");
            objects.list.push(created.clone());
            ok(201, json!({ "ticket": created }))
        }
        _ => refuse(405, json!({ "error": "MethodNotAllowed" }), "method"),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn salesforce(token: &str, r: &Recorded, objects: &mut Objects) -> Answer {
    let invalid_session = || {
        refuse(
            401,
            json!([{ "message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID" }]),
            "bad bearer token",
        )
    };
    if r.header("authorization") != Some(format!("Bearer {token}").as_str()) {
        return invalid_session();
    }
    let not_found = || {
        refuse(
            404,
            json!([{ "errorCode": "NOT_FOUND", "message": "The requested resource does not exist" }]),
            "unknown resource",
        )
    };
    let parts: Vec<&str> = r.path.split('?').next().unwrap_or("").split('/').collect();
    // ["", "services", "data", "v60.0", "sobjects", "Case", field, value]
    let [
        "",
        "services",
        "data",
        version,
        "sobjects",
        "Case",
        field,
        value,
    ] = parts.as_slice()
    else {
        return not_found();
    };
    let versioned = version
        .strip_prefix('v')
        .and_then(|v| v.strip_suffix(".0"))
        .is_some_and(|n| n.parse::<u32>().is_ok());
    if !versioned || value.is_empty() {
        return not_found();
    }
    if r.method != "PATCH" {
        return refuse(
            405,
            json!([{ "errorCode": "METHOD_NOT_ALLOWED", "message": "HTTP Method not allowed" }]),
            "method",
        );
    }
    let body = r.json();
    let Some(fields) = body.as_object() else {
        return refuse(
            400,
            json!([{ "errorCode": "JSON_PARSER_ERROR", "message": "The request body is not a JSON object" }]),
            "not a JSON object",
        );
    };
    if fields.contains_key(*field) {
        return refuse(
            400,
            json!([{ "errorCode": "INVALID_FIELD", "message": format!("The field {field} is the external id; it belongs in the URL") }]),
            "external id in the body",
        );
    }
    let key = format!("{field}/{}", percent_decode(value));
    if let Some(&i) = objects.by_key.get(&key) {
        let case = &mut objects.list[i];
        for (k, v) in fields {
            case[k] = v.clone();
        }
        let id = case["Id"].clone();
        return ok(
            200,
            json!({ "id": id, "success": true, "errors": [], "created": false }),
        );
    }
    let id = format!("500{:015}", objects.list.len() + 1);
    let mut case = Value::Object(fields.clone());
    case["Id"] = json!(id);
    case[*field] = json!(percent_decode(value));
    objects.by_key.insert(key, objects.list.len());
    objects.list.push(case);
    ok(
        201,
        json!({ "id": id, "success": true, "errors": [], "created": true }),
    )
}

fn tickets(token: &str, r: &Recorded, objects: &mut Objects) -> Answer {
    if r.header("authorization") != Some(format!("Bearer {token}").as_str()) {
        return refuse(401, json!({ "error": "unauthorized" }), "bad bearer token");
    }
    if r.path.split('?').next() != Some("/api/tickets") {
        return refuse(404, json!({ "error": "not found" }), "unknown endpoint");
    }
    if r.method != "POST" {
        return refuse(405, json!({ "error": "POST only" }), "method");
    }
    let Some(key) = r.header("idempotency-key").filter(|k| !k.is_empty()) else {
        return refuse(
            400,
            json!({ "error": "the Idempotency-Key header is required" }),
            "no Idempotency-Key",
        );
    };
    if let Some(&i) = objects.by_key.get(key) {
        let mut answer = ok(200, json!({ "ticket": objects.list[i] }));
        answer
            .headers
            .push(("idempotent-replayed".into(), "true".into()));
        return answer;
    }
    let body = r.json();
    let kind = body["type"].as_str().unwrap_or("");
    let missing = match kind {
        "chat" | "offline_message" => ["subject", "description"]
            .into_iter()
            .find(|k| body[*k].as_str().is_none_or(|s| s.trim().is_empty())),
        "wrapup" => ["chat_guid"]
            .into_iter()
            .find(|k| body[*k].as_str().is_none_or(|s| s.trim().is_empty())),
        _ => {
            return refuse(
                422,
                json!({ "error": "type must be chat, offline_message or wrapup" }),
                "unknown type",
            );
        }
    };
    if let Some(field) = missing {
        return refuse(
            422,
            json!({ "error": format!("{field} is required") }),
            format!("no {field}"),
        );
    }
    let mut ticket = body.clone();
    ticket["id"] = json!(format!("T-{}", objects.list.len() + 1));
    ticket["idempotency_key"] = json!(key);
    objects.by_key.insert(key.to_owned(), objects.list.len());
    objects.list.push(ticket.clone());
    ok(201, json!({ "ticket": ticket }))
}

pub(crate) fn summary(api: &Api, requests: &[Recorded], objects: &[Value]) -> String {
    let refused = requests.iter().filter(|r| r.refused.is_some()).count();
    let mut text = format!("{} stand-in: {} requests", api.name(), requests.len());
    match (api, refused) {
        (Api::WebHook { .. }, 0) => text.push_str(", every signature verified"),
        (_, 0) => {}
        (_, n) => text.push_str(&format!(", refused {n}")),
    }
    let line = |o: &Value| -> String {
        match api {
            Api::WebHook { .. } => format!("event {} {}", o["type"], o["id"]),
            Api::Zendesk { .. } => format!(
                "ticket #{} {} (external_id {})",
                o["id"], o["subject"], o["external_id"]
            ),
            Api::Salesforce { .. } => format!("case {} {}", o["Id"], o["Subject"]),
            Api::Tickets { .. } => format!(
                "{} {} {}",
                o["id"],
                o["type"],
                o.get("subject").unwrap_or(&o["chat_guid"])
            ),
            Api::Echo => o.to_string(),
        }
    };
    for o in objects {
        text.push_str("\n  ");
        text.push_str(&line(o));
    }
    for r in requests.iter().filter(|r| r.refused.is_some()) {
        text.push_str(&format!(
            "\n  refused {} {}: {}",
            r.method,
            r.path,
            r.refused.as_deref().unwrap_or("")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_forgery_does_not() {
        let header = webhook_signature("s3cret", 1_700_000_000, "{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(
            verify_signature("s3cret", &header, "{\"a\":1}", 1_700_000_100),
            Ok(())
        );
        assert!(verify_signature("other", &header, "{\"a\":1}", 1_700_000_100).is_err());
        assert!(verify_signature("s3cret", &header, "{\"a\":2}", 1_700_000_100).is_err());
        assert!(verify_signature("s3cret", &header, "{\"a\":1}", 1_700_001_000).is_err());
        let rotated = format!("{header},v1=00ff");
        assert_eq!(
            verify_signature("s3cret", &rotated, "{\"a\":1}", 1_700_000_000),
            Ok(())
        );
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(percent_decode("a%2Fb+c%zz"), "a/b c%zz");
    }
}
