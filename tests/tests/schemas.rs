//! The chat payloads' JSON Schema and the Rust types of `chat-events`
//! agree: for every message type, a body with every property the schema
//! names (and one with only the required ones) parses; a body without a
//! required property, with a property of the wrong type, with null where
//! the schema allows none, or with a 32-bit field out of range, does not.
//! Python's and TypeScript's types are generated from the same schema (a
//! test of the CLI checks that the kits ship exactly that).

use chat_events::{MESSAGE_TYPES, Payload};
use serde_json::{Map, Value, json};
use switchyard_tests::repo_root;

fn schema() -> Value {
    let path = repo_root().join("schemas/chat-events.schema.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn resolve<'a>(schema: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => &schema["$defs"][r.strip_prefix("#/$defs/").unwrap()],
        None => v,
    }
}

fn base_type(v: &Value) -> (&str, bool) {
    match &v["type"] {
        Value::String(t) => (t.as_str(), false),
        Value::Array(ts) => (
            ts.iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap(),
            true,
        ),
        other => panic!("type {other}"),
    }
}

/// A valid value of a schema; objects with every property (`full`) or
/// only the required ones.
fn sample(schema: &Value, v: &Value, full: bool) -> Value {
    let v = resolve(schema, v);
    let (t, _) = base_type(v);
    match t {
        "integer" => {
            let min = v["exclusiveMinimum"].as_i64().map_or(0, |m| m + 1);
            json!(min.max(7))
        }
        "number" => json!(2.5),
        "boolean" => json!(true),
        "string"
            if v["pattern"]
                .as_str()
                .is_some_and(|p| p.starts_with("^[0-9]{4}")) =>
        {
            json!("2026-11-22T09:01:00")
        }
        "string" if v["pattern"].as_str().is_some_and(|p| p.contains('@')) => {
            json!("ada@example.com")
        }
        "string" => json!("text"),
        "array" => json!([sample(schema, &v["items"], full)]),
        "object" => {
            let required = required(v);
            let mut out = Map::new();
            for (k, p) in v["properties"].as_object().unwrap() {
                if full || required.contains(k) {
                    out.insert(k.clone(), sample(schema, p, full));
                }
            }
            Value::Object(out)
        }
        other => panic!("type {other}"),
    }
}

fn required(v: &Value) -> Vec<String> {
    v["required"]
        .as_array()
        .map(|r| r.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// A value of the wrong type for a property of type `t`.
fn wrong(t: &str) -> Value {
    match t {
        "string" => json!(12),
        _ => json!({"not": "this"}),
    }
}

fn parses(message_type: &str, body: &Value) -> Result<(), String> {
    Payload::parse(message_type, &body.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_message_type_s_schema_matches_its_rust_type() {
    let schema = schema();
    let routes = schema["messageTypes"].as_object().unwrap();
    let mut named: Vec<&str> = routes.keys().map(String::as_str).collect();
    named.sort();
    let mut known = MESSAGE_TYPES.to_vec();
    known.sort();
    assert_eq!(
        named, known,
        "the schema's message types are chat-events' own"
    );

    let mut checks = 0;
    for (message_type, target) in routes {
        let name = target.as_str().unwrap().strip_prefix("#/$defs/").unwrap();
        let def = &schema["$defs"][name];
        for full in [true, false] {
            let body = sample(&schema, def, full);
            parses(message_type, &body)
                .unwrap_or_else(|e| panic!("{message_type} (full: {full}) {body}: {e}"));
            checks += 1;
        }
        let full = sample(&schema, def, true);
        let need = required(def);
        for (key, property) in def["properties"].as_object().unwrap() {
            let property = resolve(&schema, property);
            let (t, nullable) = base_type(property);
            let with = |value: Value| {
                let mut body = full.clone();
                body[key] = value;
                body
            };
            let at = format!("{message_type}: {key}");
            // Rust knows the property, with the schema's type.
            assert!(
                parses(message_type, &with(wrong(t))).is_err(),
                "{at}: a wrong type is accepted"
            );
            // Null where the schema allows it, and only there.
            let null = parses(message_type, &with(Value::Null));
            assert_eq!(null.is_ok(), nullable, "{at}: null gives {null:?}");
            // Required in the schema: required in Rust.
            let mut without = full.clone();
            without.as_object_mut().unwrap().remove(key);
            assert_eq!(
                parses(message_type, &without).is_err(),
                need.contains(key),
                "{at}: absent"
            );
            // 32-bit integers are 32-bit in Rust.
            if t == "integer" {
                let big = parses(message_type, &with(json!(3_000_000_000i64)));
                assert_eq!(
                    big.is_err(),
                    property["format"] == "int32",
                    "{at}: 3,000,000,000 gives {big:?}"
                );
            }
            // What the schema rules out beyond types, Rust rules out too.
            if property.get("exclusiveMinimum").is_some() {
                assert!(parses(message_type, &with(json!(0))).is_err(), "{at}: 0");
            }
            if property["pattern"]
                .as_str()
                .is_some_and(|p| p.starts_with("^[0-9]{4}"))
            {
                assert!(
                    parses(message_type, &with(json!("yesterday"))).is_err(),
                    "{at}: yesterday"
                );
            }
            if property["pattern"] == "\\S" {
                assert!(
                    parses(message_type, &with(json!("  "))).is_err(),
                    "{at}: blank"
                );
            }
            checks += 1;
        }
    }
    assert!(checks > 150, "{checks} checks");
}
