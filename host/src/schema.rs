//! The chat events schema (`schemas/chat-events.schema.json`, embedded):
//! which message types it describes, and whether a body matches its
//! type's payload. The router checks the bodies of the routes that set
//! `validate = true` (see [`crate::router`]).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

/// The schema, as the repository has it.
const SCHEMA: &str = include_str!("../../schemas/chat-events.schema.json");

/// Schema errors named in a reason; more are said to be there, not counted.
const MAX_ERRORS: usize = 3;
/// Bytes of one error's text kept (it quotes the producer's value).
const MAX_ERROR_BYTES: usize = 200;

/// The compiled check of one message type's payload.
pub struct PayloadSchema {
    /// The payload's name in the schema (`Chat`).
    name: String,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for PayloadSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadSchema")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Each message type of the schema (lower case) and its payload's check.
fn schemas() -> &'static BTreeMap<String, Arc<PayloadSchema>> {
    static SCHEMAS: OnceLock<BTreeMap<String, Arc<PayloadSchema>>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut document: Value =
            serde_json::from_str(SCHEMA).expect("the embedded schema is JSON (a test reads it)");
        bound_integers(&mut document);
        let types = document["messageTypes"]
            .as_object()
            .expect("the schema maps message types to payloads");
        let mut compiled: BTreeMap<&str, Arc<PayloadSchema>> = BTreeMap::new();
        types
            .iter()
            .map(|(message_type, target)| {
                let target = target.as_str().expect("a payload reference");
                let name = target.trim_start_matches("#/$defs/");
                let schema = compiled.entry(target).or_insert_with(|| {
                    // The whole document, its root now the payload: its
                    // references to other definitions resolve within it.
                    let mut root = document.clone();
                    root["$ref"] = Value::String(target.to_owned());
                    let validator = jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft202012)
                        .build(&root)
                        .expect("the embedded schema compiles (a test compiles every type)");
                    Arc::new(PayloadSchema {
                        name: name.to_owned(),
                        validator,
                    })
                });
                (message_type.to_ascii_lowercase(), schema.clone())
            })
            .collect()
    })
}

/// Gives every integer of format `int32` or `int64` the bounds of its
/// format: JSON Schema treats a format as an annotation, and the C#
/// producer's (and the kits') integers are 32 or 64 bits.
fn bound_integers(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let bounds = match map.get("format").and_then(Value::as_str) {
                Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
                Some("int64") => Some((i64::MIN, i64::MAX)),
                _ => None,
            };
            if let Some((min, max)) = bounds {
                map.entry("minimum").or_insert(min.into());
                map.entry("maximum").or_insert(max.into());
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// The check of `message_type`'s payload, if the schema has the type
/// (without regard to case, as routes match).
pub fn for_type(message_type: &str) -> Option<Arc<PayloadSchema>> {
    schemas().get(&message_type.to_ascii_lowercase()).cloned()
}

/// The message types the schema describes, lower case.
pub fn message_types() -> impl Iterator<Item = &'static str> {
    schemas().keys().map(String::as_str)
}

impl PayloadSchema {
    /// The payload's name in the schema (`Chat` for `chat.ended`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a body. On a mismatch, what is wrong: the first errors, each
    /// with where in the body, and whether there are more. A body the
    /// router took for JSON may still not be read as a value here (nested
    /// deeper than 128, a number beyond a double): that is said instead.
    pub fn check(&self, body: &[u8]) -> Result<(), String> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("the body cannot be read as a JSON value to check it ({e})"))?;
        // The common case, a match, without collecting errors.
        if self.validator.is_valid(&value) {
            return Ok(());
        }
        let mut said = Vec::new();
        let mut more = false;
        // One past the errors named, to know whether there are more, not
        // how many: a body of a million wrong items is not walked whole.
        for error in self.validator.iter_errors(&value).take(MAX_ERRORS + 1) {
            if said.len() == MAX_ERRORS {
                more = true;
                break;
            }
            let path = error.instance_path().to_string();
            let text = crate::text::bounded(&error.to_string(), MAX_ERROR_BYTES);
            said.push(if path.is_empty() {
                text
            } else {
                format!("{path}: {text}")
            });
        }
        if said.is_empty() {
            return Ok(());
        }
        let mut text = said.join("; ");
        if more {
            text.push_str("; and more");
        }
        Err(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_of_the_schema_compiles_and_matches_without_regard_to_case() {
        assert!(message_types().count() >= 17);
        for t in message_types() {
            assert!(for_type(t).is_some(), "{t}");
        }
        assert_eq!(for_type("Chat.Ended").unwrap().name(), "Chat");
        assert!(for_type("no.such.type").is_none());
    }

    #[test]
    fn a_body_is_checked_against_its_type_s_payload() {
        let chat = for_type("chat.ended").unwrap();
        let good = br#"{"ChatGuid": "g-1", "SessionId": 7, "SiteId": 1001,
            "Start": "2026-12-07T10:00:00", "End": "2026-12-07T10:05:00Z", "Extra": true}"#;
        assert_eq!(chat.check(good), Ok(()));
        let bad = br#"{"ChatGuid": "g-1", "SessionId": 7, "SiteId": "1001",
            "Start": "yesterday"}"#;
        let said = chat.check(bad).unwrap_err();
        assert!(said.contains(r#""End" is a required property"#), "{said}");
        assert!(
            said.contains(r#"/SiteId: "1001" is not of type "integer""#),
            "{said}"
        );
        assert!(said.contains("/Start: "), "{said}");
        // Many errors: three named, the rest said to be there.
        let many = br#"{"ChatGuid": "g", "SiteId": 0, "AgentIds": ["a", "b", "c", "d"]}"#;
        let said = chat.check(many).unwrap_err();
        assert_eq!(said.matches("; ").count(), 3, "{said}");
        assert!(said.ends_with("; and more"), "{said}");
        // The producer's value, quoted in an error, is cut.
        let long = format!(
            r#"{{"ChatGuid": "{}", "SessionId": 1, "SiteId": 1, "Start": "2026-12-07T10:00:00", "End": "2026-12-07T10:05:00"}}"#,
            " ".repeat(5000)
        );
        let said = chat.check(long.as_bytes()).unwrap_err();
        assert!(
            said.starts_with("/ChatGuid: ") && said.contains("more bytes]"),
            "{said}"
        );
        assert!(said.len() < MAX_ERROR_BYTES + 40, "{}", said.len());
        // JSON the router accepts that is no value to check: said so.
        let deep = format!(
            r#"{{"ChatGuid": "g", "SessionId": 1, "SiteId": 1, "Start": "2026-12-07T10:00:00", "End": "2026-12-07T10:05:00", "Extra": {}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        serde_json::from_str::<serde::de::IgnoredAny>(&deep).unwrap();
        let said = chat.check(deep.as_bytes()).unwrap_err();
        assert!(
            said.starts_with(
                "the body cannot be read as a JSON value to check it (recursion limit exceeded"
            ),
            "{said}"
        );
        assert_eq!(
            chat.check(b"[1, 2]").unwrap_err(),
            r#"[1,2] is not of type "object""#
        );
        // 32-bit integers are bounded; 64-bit ones too.
        let wide = br#"{"ChatGuid": "g-1", "SessionId": 9223372036854775807, "SiteId": 2147483648,
            "Start": "2026-12-07T10:00:00", "End": "2026-12-07T10:05:00", "AgentIds": [-2147483649]}"#;
        let said = chat.check(wide).unwrap_err();
        assert!(
            said.contains("/SiteId: 2147483648 is greater than the maximum of 2147483647"),
            "{said}"
        );
        assert!(
            said.contains("/AgentIds/0: -2147483649 is less than the minimum of -2147483648"),
            "{said}"
        );
        assert!(!said.contains("SessionId"), "{said}");
        let huge = br#"{"ChatGuid": "g-1", "SessionId": 9223372036854775808, "SiteId": 1,
            "Start": "2026-12-07T10:00:00", "End": "2026-12-07T10:05:00"}"#;
        assert!(chat.check(huge).unwrap_err().contains("/SessionId: "));
    }
}
