//! SQL for plugins: `switchyard:plugin/sql` on a queue's PostgreSQL
//! database.
//!
//! Each queue granted a database (`[queues.X.sql]`) has a pool of at most
//! `pool` connections, shared by all its calls. A statement takes a
//! connection for its own length, or, inside a transaction, the one the
//! transaction holds for the rest of the call. Every statement runs within
//! the queue's `timeout` and the call's deadline: past either it is
//! cancelled on the server and its connection is closed, never handed to
//! another call in an unknown state. The same goes for a connection whose
//! transaction the call left open: closing it rolls the transaction back.
//!
//! A database URL with `sslmode=require` is reached over TLS, the
//! server's certificate verified against the web's roots and the queue's
//! `ca_file`, and its name against the URL's host; any other URL is plain.
//!
//! Parameters are typed values the plugin passes beside the statement's
//! text (`$1`, `$2`, ...), converted to the types the server asks for;
//! nothing a plugin passes is ever spliced into SQL. What a query returns
//! is bounded in rows and bytes.
//!
//! - [`pool`]: the pool, statements within their timeouts, leases;
//! - [`session`]: what keeps a pooled connection clean between calls;
//! - [`values`]: parameters and columns;
//! - [`errors`]: the contract's errors;
//! - [`call`]: one call's state, its transaction;
//! - [`tls`]: plain or verified TLS connections.

mod call;
mod errors;
mod pool;
pub(crate) mod session;
mod tls;
mod values;

pub use call::CallSql;
pub use errors::SqlError;
pub use pool::{Lease, Output, QueueSql};
pub use tls::DbTls;
pub use values::{Column, RowSet, Value};

use errors::{db_error, pool_error};
use values::{Param, ParamError, bind, row_values};

use crate::plugin::HostState;
use crate::plugin::bindings::v0_2::switchyard::plugin::sql;

// The host side of `switchyard:plugin/sql@0.2.0`.

fn value_in(v: sql::DbValue) -> Value {
    match v {
        sql::DbValue::Null => Value::Null,
        sql::DbValue::Boolean(b) => Value::Boolean(b),
        sql::DbValue::Int32(n) => Value::Int32(n),
        sql::DbValue::Int64(n) => Value::Int64(n),
        sql::DbValue::Floating64(f) => Value::Floating64(f),
        sql::DbValue::Str(s) => Value::Str(s),
        sql::DbValue::Binary(b) => Value::Binary(b),
    }
}

fn value_out(v: Value) -> sql::DbValue {
    match v {
        Value::Null => sql::DbValue::Null,
        Value::Boolean(b) => sql::DbValue::Boolean(b),
        Value::Int32(n) => sql::DbValue::Int32(n),
        Value::Int64(n) => sql::DbValue::Int64(n),
        Value::Floating64(f) => sql::DbValue::Floating64(f),
        Value::Str(s) => sql::DbValue::Str(s),
        Value::Binary(b) => sql::DbValue::Binary(b),
    }
}

fn error_out(e: SqlError) -> sql::Error {
    match e {
        SqlError::NotGranted => sql::Error::NotGranted,
        SqlError::Database {
            code,
            message,
            transient,
        } => sql::Error::Database(sql::DatabaseError {
            code,
            message,
            transient,
        }),
        SqlError::Unavailable(s) => sql::Error::Unavailable(s),
        SqlError::Timeout(s) => sql::Error::Timeout(s),
        SqlError::Invalid(s) => sql::Error::Invalid(s),
    }
}

impl HostState {
    /// Counts a statement refused for want of a grant.
    fn sql_refused<T>(&self, result: &Result<T, SqlError>) {
        if matches!(result, Err(SqlError::NotGranted)) {
            crate::events::denied(
                &self.metrics,
                &self.queue,
                crate::kinds::Capability::Sql,
                "no [sql] grant",
            );
        }
    }
}

impl sql::Host for HostState {
    async fn query(
        &mut self,
        statement: String,
        params: Vec<sql::DbValue>,
    ) -> Result<sql::RowSet, sql::Error> {
        let params: Vec<Value> = params.into_iter().map(value_in).collect();
        let result = self.sql.run(&statement, &params, true).await;
        self.sql_refused(&result);
        match result {
            Ok(Output::Rows(set)) => Ok(sql::RowSet {
                columns: set
                    .columns
                    .into_iter()
                    .map(|c| sql::Column {
                        name: c.name,
                        data_type: c.data_type,
                    })
                    .collect(),
                rows: set
                    .rows
                    .into_iter()
                    .map(|r| r.into_iter().map(value_out).collect())
                    .collect(),
            }),
            Ok(Output::Affected(_)) => Ok(sql::RowSet {
                columns: Vec::new(),
                rows: Vec::new(),
            }),
            Err(e) => Err(error_out(e)),
        }
    }

    async fn execute(
        &mut self,
        statement: String,
        params: Vec<sql::DbValue>,
    ) -> Result<u64, sql::Error> {
        let params: Vec<Value> = params.into_iter().map(value_in).collect();
        let result = self.sql.run(&statement, &params, false).await;
        self.sql_refused(&result);
        match result {
            Ok(Output::Affected(n)) => Ok(n),
            Ok(Output::Rows(set)) => Ok(set.rows.len() as u64),
            Err(e) => Err(error_out(e)),
        }
    }

    async fn begin(&mut self) -> Result<(), sql::Error> {
        self.sql.begin().await.map_err(error_out)
    }

    async fn commit(&mut self) -> Result<(), sql::Error> {
        self.sql.end("COMMIT").await.map_err(error_out)
    }

    async fn rollback(&mut self) -> Result<(), sql::Error> {
        self.sql.end("ROLLBACK").await.map_err(error_out)
    }
}
