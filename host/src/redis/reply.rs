//! Replies of Redis read into the host's types: stream entries, XINFO
//! pairs, plain values.

use anyhow::{Context, Result, bail};
use redis::Value;

use crate::message::Fields;

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: Fields,
}

pub fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub fn string(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads an XINFO reply entry (a flat array of name, value, ... in RESP2,
/// a map in RESP3) into name/value pairs.
pub fn info_pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Array(flat) => flat
            .chunks_exact(2)
            .filter_map(|kv| Some((string(&kv[0])?, kv[1].clone())))
            .collect(),
        Value::Map(m) => m
            .iter()
            .filter_map(|(k, v)| Some((string(k)?, v.clone())))
            .collect(),
        _ => Vec::new(),
    }
}

/// The value of one XINFO field.
pub fn info_field<'a>(pairs: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Parses an array of `[id, [field, value, ...]]`. Entries whose data was
/// deleted (nil fields) are skipped.
pub fn parse_entries(v: &Value) -> Result<Vec<Entry>> {
    let Value::Array(items) = v else {
        if matches!(v, Value::Nil) {
            return Ok(Vec::new());
        }
        bail!("unexpected stream reply: {v:?}");
    };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            bail!("unexpected stream entry: {item:?}")
        };
        let [id, data] = parts.as_slice() else {
            bail!("unexpected stream entry: {item:?}")
        };
        let id = string(id).context("stream entry without an id")?;
        let Value::Array(flat) = data else {
            continue;
        };
        let fields = flat
            .chunks_exact(2)
            .filter_map(|kv| Some((bytes(&kv[0])?, bytes(&kv[1])?)))
            .collect();
        entries.push(Entry { id, fields });
    }
    Ok(entries)
}

/// Parses an XREADGROUP reply for one stream.
pub fn parse_read(v: &Value) -> Result<Vec<Entry>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some(Value::Array(kv)) if kv.len() == 2 => parse_entries(&kv[1]),
            Some(other) => bail!("unexpected XREADGROUP reply: {other:?}"),
        },
        Value::Map(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some((_, entries)) => parse_entries(entries),
        },
        other => bail!("unexpected XREADGROUP reply: {other:?}"),
    }
}
