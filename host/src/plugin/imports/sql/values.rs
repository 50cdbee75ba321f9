//! Parameters and columns: the contract's `db-value`, bound to the types a
//! statement expects and read from the types a row has.

use std::error::Error as StdError;

use bytes::BytesMut;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Row, Statement};

use super::*;

/// A parameter or a column's value (the contract's `db-value`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Int32(i32),
    Int64(i64),
    Floating64(f64),
    Str(String),
    Binary(Vec<u8>),
}

/// A column of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub data_type: String,
}

/// What a query returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

/// The error of a parameter that does not convert, carried through
/// tokio-postgres's error as its source.
#[derive(Debug)]
pub(super) struct ParamError(pub(super) String);

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for ParamError {}

/// A parameter bound to the type the statement expects.
#[derive(Debug)]
pub(super) struct Param {
    index: usize,
    value: Value,
}

pub(super) fn bind(statement: &Statement, params: &[Value]) -> Result<Vec<Param>, SqlError> {
    let expected = statement.params().len();
    if params.len() != expected {
        return Err(SqlError::Invalid(format!(
            "the statement takes {expected} parameters, {} were given",
            params.len()
        )));
    }
    Ok(params
        .iter()
        .enumerate()
        .map(|(i, v)| Param {
            index: i + 1,
            value: v.clone(),
        })
        .collect())
}

pub(super) fn parse_time(text: &str) -> Option<DateTime<FixedOffset>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t);
    }
    let t = text.replace(' ', "T");
    if let Ok(t) = DateTime::parse_from_rfc3339(&t) {
        return Some(t);
    }
    // Without an offset: UTC.
    NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc().fixed_offset())
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let wrong = || -> Box<dyn StdError + Sync + Send> {
            Box::new(ParamError(format!(
                "parameter ${} is {}, which does not convert to {} (cast it in the statement, e.g. ${}::text)",
                self.index,
                self.value.kind(),
                ty.name(),
                self.index
            )))
        };
        let range = |n: i64| -> Box<dyn StdError + Sync + Send> {
            Box::new(ParamError(format!(
                "parameter ${}: {n} does not fit {}",
                self.index,
                ty.name()
            )))
        };
        match &self.value {
            Value::Null => Ok(IsNull::Yes),
            Value::Boolean(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            Value::Int32(_) | Value::Int64(_) => {
                let n = match self.value {
                    Value::Int32(n) => i64::from(n),
                    Value::Int64(n) => n,
                    _ => unreachable!(),
                };
                match *ty {
                    Type::INT2 => i16::try_from(n).map_err(|_| range(n))?.to_sql(ty, out),
                    Type::INT4 => i32::try_from(n).map_err(|_| range(n))?.to_sql(ty, out),
                    Type::INT8 => n.to_sql(ty, out),
                    Type::OID => u32::try_from(n).map_err(|_| range(n))?.to_sql(ty, out),
                    Type::FLOAT8 => (n as f64).to_sql(ty, out),
                    Type::FLOAT4 => (n as f32).to_sql(ty, out),
                    _ => Err(wrong()),
                }
            }
            Value::Floating64(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(wrong()),
            },
            Value::Str(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(&Type::TEXT, out)
                }
                Type::JSON | Type::JSONB => {
                    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| {
                        Box::new(ParamError(format!(
                            "parameter ${} is not JSON: {e}",
                            self.index
                        ))) as Box<dyn StdError + Sync + Send>
                    })?;
                    v.to_sql(ty, out)
                }
                Type::TIMESTAMPTZ | Type::TIMESTAMP | Type::DATE => {
                    let bad = || -> Box<dyn StdError + Sync + Send> {
                        Box::new(ParamError(format!(
                            "parameter ${}: {:?} is not an ISO 8601 date and time",
                            self.index,
                            crate::text::bounded(s, 64)
                        )))
                    };
                    if *ty == Type::DATE
                        && let Ok(d) = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                    {
                        return d.to_sql(ty, out);
                    }
                    let t = parse_time(s).ok_or_else(bad)?;
                    match *ty {
                        Type::TIMESTAMPTZ => t.with_timezone(&Utc).to_sql(ty, out),
                        Type::TIMESTAMP => t.with_timezone(&Utc).naive_utc().to_sql(ty, out),
                        _ => t.with_timezone(&Utc).date_naive().to_sql(ty, out),
                    }
                }
                _ => Err(wrong()),
            },
            Value::Binary(b) if *ty == Type::BYTEA => b.as_slice().to_sql(ty, out),
            _ => Err(wrong()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl Value {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Boolean(_) => "a boolean",
            Value::Int32(_) => "an int32",
            Value::Int64(_) => "an int64",
            Value::Floating64(_) => "a floating64",
            Value::Str(_) => "a str",
            Value::Binary(_) => "binary",
        }
    }

    /// Bytes it takes, for the bound on results.
    pub(super) fn size(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Binary(b) => b.len(),
            _ => 8,
        }
    }
}

/// A row's values, each the nearest contract value of its column's type.
pub(super) fn row_values(row: &Row) -> Result<Vec<Value>, SqlError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let err = |e: tokio_postgres::Error| {
            SqlError::Invalid(format!("column {:?}: {e}", column.name()))
        };
        macro_rules! get {
            ($t:ty, $f:expr) => {
                row.try_get::<_, Option<$t>>(i)
                    .map_err(err)?
                    .map_or(Value::Null, $f)
            };
        }
        let value = match *ty {
            Type::BOOL => get!(bool, Value::Boolean),
            Type::INT2 => get!(i16, |n| Value::Int32(i32::from(n))),
            Type::INT4 => get!(i32, Value::Int32),
            Type::INT8 => get!(i64, Value::Int64),
            Type::OID => get!(u32, |n| Value::Int64(i64::from(n))),
            Type::FLOAT4 => get!(f32, |f| Value::Floating64(f64::from(f))),
            Type::FLOAT8 => get!(f64, Value::Floating64),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                get!(String, Value::Str)
            }
            Type::JSON | Type::JSONB => get!(serde_json::Value, |v| Value::Str(v.to_string())),
            Type::TIMESTAMPTZ => get!(DateTime<Utc>, |t| Value::Str(t.to_rfc3339())),
            Type::TIMESTAMP => get!(NaiveDateTime, |t| Value::Str(
                t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
            )),
            Type::DATE => get!(NaiveDate, |d| Value::Str(d.to_string())),
            Type::BYTEA => get!(Vec<u8>, Value::Binary),
            _ => {
                return Err(SqlError::Invalid(format!(
                    "column {:?} is of type {}, which the contract does not map: cast it in the query (e.g. {}::text)",
                    column.name(),
                    ty.name(),
                    column.name()
                )));
            }
        };
        values.push(value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_with_and_without_an_offset() {
        let utc = parse_time("2026-11-22T09:01:00").unwrap();
        assert_eq!(utc.to_rfc3339(), "2026-11-22T09:01:00+00:00");
        let plus8 = parse_time("2026-11-22T09:01:00.5+08:00").unwrap();
        assert_eq!(
            plus8.with_timezone(&Utc).to_rfc3339(),
            "2026-11-22T01:01:00.500+00:00"
        );
        assert!(parse_time("2026-11-22 09:01:00Z").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
