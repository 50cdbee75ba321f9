//! The Persistence queue's handler: every chat event is stored in the chat
//! database (PostgreSQL, through the queue's `[sql]` grant).
//!
//! The statements are `chat_events::store::plan`'s, against the schema of
//! `migrations/` (`switchyard migrate` applies it), and all the writes of
//! one message run in one transaction. Every write is idempotent, keyed by
//! the message id or the event's natural key, so a redelivery (the host
//! died after the commit and before the ack) leaves the rows as they were.
//!
//! A payload that does not parse, or that the database refuses as data (a
//! value out of range, a constraint), is rejected: it would fail again. A
//! database that is down, busy or missing a table is retried.

use chat_events::store::{self, Param};
use switchyard_plugin::sql::{self, Value};
use switchyard_plugin::{Failure, Handler, Message, log};

struct Persistence;

fn value(p: Param) -> Value {
    match p {
        Param::Null => Value::Null,
        Param::Bool(b) => Value::Boolean(b),
        Param::Int32(n) => Value::Int32(n),
        Param::Int64(n) => Value::Int64(n),
        Param::Float(f) => Value::Floating64(f),
        Param::Text(s) => Value::Str(s),
    }
}

impl Handler for Persistence {
    fn handle(message: Message) -> Result<(), Failure> {
        let plan = store::plan(&message.id, &message.message_type, &message.body)
            .map_err(|e| Failure::reject(e.to_string()))?;
        let rows = sql::transaction(|| {
            let mut rows = 0;
            for statement in plan {
                let params: Vec<Value> = statement.params.into_iter().map(value).collect();
                rows += sql::execute(statement.sql, &params)?;
            }
            Ok(rows)
        })
        .map_err(|e| sql::into_failure(e, "storing the event"))?;
        log::debug(&format!(
            "stored {} ({} rows written)",
            message.message_type, rows
        ));
        Ok(())
    }
}

switchyard_plugin::export!(Persistence);
