//! Dead letters as `switchyard dead` prints them: tables and records, every
//! producer and plugin text cut and escaped, and their JSON forms.

use super::{DeadLetter, Record};
use crate::stream::dead_fields;
use crate::text::{Escaped, bounded};

/// Bytes of a reason `dead list` prints.
const LISTED_REASON: usize = 120;

/// `dead list` as a table, producer and plugin texts cut and escaped.
pub fn render_list(letters: &[DeadLetter]) -> String {
    use std::fmt::Write;
    let cut = |t: &str, n: usize| Escaped(&bounded(t, n)).to_string();
    let mut out = format!(
        "{:<17} {:<26} {:<12} {:<26} {:<20} {:>8}  REASON\n",
        "ID", "DEAD-LETTERED", "QUEUE", "TYPE", "MESSAGE ID", "ATTEMPTS"
    );
    for d in letters {
        let queue = if d.queue.is_empty() {
            "(router)"
        } else {
            &d.queue
        };
        let _ = writeln!(
            out,
            "{:<17} {:<26} {:<12} {:<26} {:<20} {:>8}  {}",
            d.id,
            cut(&d.at, 32),
            cut(queue, 40),
            cut(&d.message_type, 60),
            cut(&d.message_id, 60),
            cut(&d.attempts, 10),
            cut(&d.reason, LISTED_REASON)
        );
    }
    out
}

/// `dead list --json`: one object per dead letter.
pub fn list_json(letters: &[DeadLetter]) -> serde_json::Value {
    letters
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "at": d.at,
                "queue": if d.queue.is_empty() { "(router)" } else { &d.queue },
                "type": d.message_type,
                "message_id": d.message_id,
                "attempts": d.attempts.parse::<u64>().ok(),
                "reason": d.reason,
            })
        })
        .collect()
}

/// `dead show`: the record's own fields, the failed attempts, then the
/// message's fields with a JSON body pretty-printed; every text escaped
/// (a line break is written `\n`), so none can forge a line.
pub fn render_record(record: &Record) -> String {
    use std::fmt::Write;
    let mut out = format!("Dead letter {}\n", record.id);
    for (k, v) in record.fields.iter().filter(|(k, _)| k.starts_with("dead-")) {
        if k == dead_fields::ERRORS {
            continue;
        }
        let _ = writeln!(out, "  {}: {}", Escaped(k), Escaped(v));
    }
    let errors = record.errors();
    if !errors.is_empty() {
        out.push_str("Failed attempts, oldest first:\n");
        for (n, e) in errors.iter().enumerate() {
            let _ = writeln!(out, "  {}. {}", n + 1, Escaped(e));
        }
    }
    out.push_str("Message:\n");
    for (k, v) in record.original() {
        if k == "body"
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&v)
        {
            let pretty = serde_json::to_string_pretty(&json).unwrap_or(v);
            out.push_str("  body:\n");
            for line in pretty.lines() {
                let _ = writeln!(out, "    {}", Escaped(line));
            }
        } else {
            let _ = writeln!(out, "  {}: {}", Escaped(&k), Escaped(&v));
        }
    }
    out
}

/// `dead show --json`.
pub fn record_json(record: &Record) -> serde_json::Value {
    let object = |fields: Vec<(String, String)>| {
        serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        )
    };
    serde_json::json!({
        "id": record.id,
        "record": object(record.fields.iter().filter(|(k, _)| k.starts_with("dead-")).cloned().collect()),
        "errors": record.errors(),
        "message": object(record.original()),
    })
}
