//! Reading queues.toml's text into [`RawConfig`], every problem of its
//! shape reported at once.
//!
//! Values never stop the reading (see [`super::raw::Setting`]); what does
//! is a key serde does not know (`deny_unknown_fields`) or a table written
//! as something else. Each such problem is reported with its key and
//! line, the key is taken out of the document, and the document is read
//! again, until it reads: so a file with three unknown keys gets three
//! errors, and every other problem in it is still found.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::raw::RawConfig;

/// Where each key of the file is: dotted key path to its 1-based line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lines {
    lines: BTreeMap<String, usize>,
}

impl Lines {
    /// The line of `key`, if the file has it.
    pub fn of(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }

    fn read(text: &str, table: &DeTable<'_>, prefix: &str, lines: &mut BTreeMap<String, usize>) {
        for (k, v) in table {
            let path = join(prefix, k.get_ref());
            lines.insert(path.clone(), line_at(text, k.span().start));
            if let DeValue::Table(t) = v.get_ref() {
                Self::read(text, t, &path, lines);
            }
        }
    }
}

/// A dotted key path, with a part quoted when it holds a dot or is empty
/// (`routes."chat.ended"`).
pub fn join(prefix: &str, part: &str) -> String {
    let quoted = part.is_empty() || part.contains(['.', '"', ' ']);
    let part = if quoted {
        format!("\"{part}\"")
    } else {
        part.to_owned()
    };
    if prefix.is_empty() {
        part
    } else {
        format!("{prefix}.{part}")
    }
}

/// The 1-based line of byte `offset` of `text`.
pub fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The file read: its raw settings, what was wrong with its shape, and
/// where every key is.
#[derive(Debug)]
pub struct Parsed {
    pub raw: RawConfig,
    pub errors: Vec<ConfigError>,
    pub lines: Lines,
}

/// Reads `text`. A syntax error is the one error returned: nothing after
/// it can be trusted.
pub fn parse(text: &str) -> Result<Parsed, ConfigError> {
    let mut doc = DeTable::parse(text).map_err(|e| ConfigError {
        key: String::new(),
        line: e.span().map(|s| line_at(text, s.start)),
        message: format!("not valid TOML: {}", e.message().trim()),
    })?;
    let mut lines = BTreeMap::new();
    Lines::read(text, doc.get_ref(), "", &mut lines);
    let lines = Lines { lines };
    let mut errors = Vec::new();
    // Each round takes one key out; a document cannot need more rounds
    // than it has keys.
    for _ in 0..=lines.lines.len() {
        let de = toml::de::Deserializer::from(doc.clone());
        let e = match RawConfig::deserialize(de) {
            Ok(raw) => return Ok(Parsed { raw, errors, lines }),
            Err(e) => e,
        };
        let Some(path) = e.span().and_then(|span| locate(doc.get_ref(), &span)) else {
            errors.push(ConfigError {
                key: String::new(),
                line: None,
                message: e.message().trim().to_owned(),
            });
            break;
        };
        let key = path
            .iter()
            .fold(String::new(), |prefix, part| join(&prefix, part));
        errors.push(ConfigError {
            line: lines.of(&key),
            message: message(e.message()),
            key,
        });
        remove(doc.get_mut(), &path);
    }
    Ok(Parsed {
        raw: RawConfig::default(),
        errors,
        lines,
    })
}

/// serde's words made queues.toml's: `unknown field `x`, expected one of
/// `a`, `b`` is an unknown key; a struct found as something else is a table
/// written wrong.
fn message(serde: &str) -> String {
    let serde = serde.trim();
    if let Some(rest) = serde.strip_prefix("unknown field `") {
        let expected = rest
            .split_once(", expected ")
            .map(|(_, e)| e.trim_start_matches("one of ").replace('`', ""))
            .unwrap_or_default();
        return if expected.is_empty() {
            "unknown key".into()
        } else {
            format!("unknown key (expected one of: {expected})")
        };
    }
    if let Some(rest) = serde.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
        && (expected.starts_with("struct ") || expected.starts_with("a map"))
    {
        let found = found.split(' ').next().unwrap_or(found);
        let found = match found {
            "sequence" => "array",
            "map" => "table",
            other => other,
        };
        return format!("must be a table, found {found}");
    }
    serde.to_owned()
}

/// The key path of the deepest key whose name, or whose value, holds the
/// start of `span`.
fn locate(table: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<String>> {
    let at = span.start;
    for (k, v) in table {
        let name = k.get_ref().to_string();
        if k.span().contains(&at) || k.span().start == at {
            return Some(vec![name]);
        }
        if let DeValue::Table(t) = v.get_ref()
            && let Some(mut deeper) = locate(t, span)
        {
            deeper.insert(0, name);
            return Some(deeper);
        }
    }
    for (k, v) in table {
        if v.span().contains(&at) || v.span().start == at {
            return Some(vec![k.get_ref().to_string()]);
        }
    }
    None
}

/// Takes the key at `path` out of the document.
fn remove(table: &mut DeTable<'_>, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            table.remove(last.as_str());
        }
        [first, rest @ ..] => {
            if let Some(v) = table.get_mut(first.as_str())
                && let DeValue::Table(t) = v.get_mut()
            {
                remove(t, rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_and_misshapen_table_is_found_with_its_line() {
        let text = r#"
[host]
prefx = "a"
[queues.Email]
plugin = "x.wasm"
colour = "blue"
memory_mib = "four"
[queues.Email.sql]
pool = 2
bogus = 1
[queues.Ticket]
plugin = "t.wasm"
keyvalue = 5
"#;
        let parsed = parse(text).unwrap();
        let shown: Vec<String> = parsed.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(parsed.errors.len(), 4, "{shown:#?}");
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("line 3: host.prefx: unknown key (expected one of: ")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("line 6: queues.Email.colour: unknown key")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("line 10: queues.Email.sql.bogus: unknown key")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e == "line 13: queues.Ticket.keyvalue: must be a table, found integer"),
            "{shown:#?}"
        );
        // The values are still read; a wrong one is kept as what was found.
        let email = &parsed.raw.queues.as_ref().unwrap()["Email"];
        assert_eq!(
            email.memory_mib.as_ref().unwrap().value.as_ref().err(),
            Some(&"string")
        );
        assert_eq!(parsed.lines.of("queues.Email.memory_mib"), Some(7));
    }

    #[test]
    fn a_syntax_error_is_one_error_with_its_line() {
        let e = parse("[host]\nprefix = \"a\"\nbroken = \n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.starts_with("not valid TOML: "), "{e}");
    }

    #[test]
    fn keys_with_dots_are_quoted() {
        let parsed = parse("[routes]\n\"chat.ended\" = [\"A\"]\n").unwrap();
        assert_eq!(parsed.lines.of("routes.\"chat.ended\""), Some(2));
    }
}
