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

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use futures_util::StreamExt;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{CancelToken, Client, NoTls, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::admin::metrics::QueueMetrics;
use crate::config::{CaFile, SqlSettings};

/// How the host reaches a database: as its URL's `sslmode` says.
#[derive(Clone)]
pub enum DbTls {
    Plain,
    /// `sslmode=require`: TLS, the certificate and name verified.
    Verified(MakeRustlsConnect),
}

impl std::fmt::Debug for DbTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbTls::Plain => "Plain",
            DbTls::Verified(_) => "Verified",
        })
    }
}

impl DbTls {
    pub fn new(config: &tokio_postgres::Config, ca_file: Option<&CaFile>) -> anyhow::Result<Self> {
        Ok(match config.get_ssl_mode() {
            SslMode::Require => {
                DbTls::Verified(MakeRustlsConnect::new(crate::tls::client_config(ca_file)?))
            }
            _ => DbTls::Plain,
        })
    }

    /// A pool manager connecting this way.
    fn manager(&self, config: tokio_postgres::Config, settings: ManagerConfig) -> Manager {
        match self {
            DbTls::Plain => Manager::from_config(config, NoTls, settings),
            DbTls::Verified(tls) => Manager::from_config(config, tls.clone(), settings),
        }
    }

    /// One connection, outside any pool; its driving task is spawned.
    pub async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        fn drive<S, T>(connection: tokio_postgres::Connection<S, T>) -> tokio::task::JoinHandle<()>
        where
            S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
            T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        {
            tokio::spawn(async move {
                let _ = connection.await;
            })
        }
        match self {
            DbTls::Plain => {
                let (client, connection) = config.connect(NoTls).await?;
                Ok((client, drive(connection)))
            }
            DbTls::Verified(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                Ok((client, drive(connection)))
            }
        }
    }

    /// Asks the server to cancel what runs on a connection.
    async fn cancel(&self, token: CancelToken) {
        let _ = match self {
            DbTls::Plain => token.cancel_query(NoTls).await,
            DbTls::Verified(tls) => token.cancel_query(tls.clone()).await,
        };
    }
}

/// Prepared statements one connection keeps; past this its cache is
/// emptied (a plugin building statements on the fly must not grow it
/// without bound).
const STATEMENT_CACHE: usize = 512;

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

/// Why a statement failed (the contract's `error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error("the queue has no database (queues.<name>.sql)")]
    NotGranted,
    #[error("the database refused the statement: {message} (SQLSTATE {code})")]
    Database {
        code: String,
        message: String,
        transient: bool,
    },
    #[error("no database connection: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Invalid(String),
}

impl SqlError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SqlError::Database { transient, .. } => *transient,
            SqlError::Unavailable(_) | SqlError::Timeout(_) => true,
            SqlError::NotGranted | SqlError::Invalid(_) => false,
        }
    }
}

/// Whether an SQLSTATE says that the same statement may succeed later:
/// serialization failures and deadlocks (40), the server out of resources
/// (53), shutting down or starting (57P0x), a lost connection (08).
fn transient_state(code: &str) -> bool {
    code.starts_with("40")
        || code.starts_with("53")
        || code.starts_with("08")
        || code.starts_with("57P")
}

fn db_error(e: tokio_postgres::Error) -> SqlError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code().to_owned();
        if code == "57014" {
            return SqlError::Timeout(format!(
                "the statement was cancelled on the server: {}",
                db.message()
            ));
        }
        return SqlError::Database {
            transient: transient_state(&code),
            message: crate::text::bounded(db.message(), 1024),
            code,
        };
    }
    if e.is_closed() {
        return SqlError::Unavailable(format!("the connection was lost: {e}"));
    }
    // A parameter that did not convert is reported through the error's
    // source, with our own text.
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(p) = s.downcast_ref::<ParamError>() {
            return SqlError::Invalid(p.0.clone());
        }
        source = s.source();
    }
    SqlError::Unavailable(e.to_string())
}

fn pool_error(e: PoolError) -> SqlError {
    match e {
        PoolError::Timeout(kind) => SqlError::Unavailable(format!(
            "no connection in time ({kind:?}): every pooled connection stayed busy, or the database did not answer"
        )),
        // Opening a connection failed: the server down, TLS, a refused
        // login, a missing database. The operator's to fix, never the
        // message's fault, so never a reason to reject it.
        PoolError::Backend(e) => SqlError::Unavailable(match e.as_db_error() {
            Some(db) => format!(
                "the server refused the connection: {} (SQLSTATE {})",
                crate::text::bounded(db.message(), 1024),
                db.code().code()
            ),
            // tokio-postgres's text leaves out the cause ("error
            // performing TLS handshake"): the operator needs it.
            None => crate::text::bounded(&with_causes(&e), 1024),
        }),
        other => SqlError::Unavailable(other.to_string()),
    }
}

/// An error's text followed by its causes'.
fn with_causes(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// A queue's database: its pool and limits.
pub struct QueueSql {
    queue: Arc<str>,
    settings: SqlSettings,
    pool: Pool,
    tls: DbTls,
    metrics: Arc<QueueMetrics>,
}

impl std::fmt::Debug for QueueSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSql")
            .field("queue", &self.queue)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl QueueSql {
    /// A pool for the queue; connects lazily, on the first statement.
    pub fn new(
        queue: &str,
        settings: SqlSettings,
        metrics: Arc<QueueMetrics>,
    ) -> anyhow::Result<Self> {
        let mut pg: tokio_postgres::Config = settings.database_url.parse()?;
        let tls = DbTls::new(&pg, settings.ca_file.as_ref())?;
        pg.application_name(format!("switchyard {queue}"));
        pg.connect_timeout(settings.timeout);
        // The server's own bound on a statement (the host cancels at its
        // deadline too, but a session that lost its host stops here), and
        // UTC, so that a time without an offset means the same in a
        // parameter and in SQL; client_min_messages: a plugin's statements cannot flood the
        // host's log with notices (tokio-postgres logs each one).
        pg.options(format!(
            "-c statement_timeout={} -c TimeZone=UTC -c client_min_messages=error",
            settings.timeout.as_millis()
        ));
        let manager = tls.clone().manager(
            pg,
            ManagerConfig {
                // Whatever a call left in its session is undone before
                // the connection serves another call.
                // Whoever hands a connection back has reset it already, in
                // the round trip of its last statement (see `run_on`,
                // `control`): nothing to do here but see it is open.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool as usize)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        Ok(QueueSql {
            queue: queue.into(),
            settings,
            pool,
            tls,
            metrics,
        })
    }

    pub fn settings(&self) -> &SqlSettings {
        &self.settings
    }

    /// Connections open now, idle or in use.
    pub fn open_connections(&self) -> usize {
        self.pool.status().size
    }

    /// How long a statement started now may run.
    fn budget(&self, deadline: Instant) -> Result<Duration, SqlError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SqlError::Timeout("the call's deadline has passed".into()));
        }
        Ok(left.min(self.settings.timeout))
    }

    /// A connection, waited for at most until the statement's budget runs
    /// out.
    async fn lease(&self, deadline: Instant) -> Result<Lease, SqlError> {
        let budget = self.budget(deadline)?;
        let timeouts = deadpool_postgres::Timeouts {
            wait: Some(budget),
            create: Some(budget),
            recycle: Some(budget),
        };
        let object = self.pool.timeout_get(&timeouts).await.map_err(pool_error)?;
        Ok(Lease {
            object: Some(object),
            clean: false,
            tls: self.tls.clone(),
        })
    }

    /// Runs one statement, on `lease` or a connection of its own.
    pub async fn run(
        &self,
        lease: Option<&mut Lease>,
        statement: &str,
        params: &[Value],
        deadline: Instant,
        rows: bool,
    ) -> Result<Output, SqlError> {
        QueueMetrics::add(&self.metrics.sql_statements);
        let started = Instant::now();
        let result = match lease {
            Some(lease) => {
                self.run_on(lease, statement, params, deadline, rows, false)
                    .await
            }
            None => match self.lease(deadline).await {
                // Back to the pool when dropped, if `run_on` found it fit
                // and reset it.
                Ok(mut lease) => {
                    self.run_on(&mut lease, statement, params, deadline, rows, true)
                        .await
                }
                Err(e) => Err(e),
            },
        };
        self.metrics.timed(2, started);
        if result.is_err() {
            QueueMetrics::add(&self.metrics.sql_failed);
        }
        result
    }

    /// Runs one statement on `lease`; with `reset`, the connection is then
    /// reset for the next call, in the same round trip.
    async fn run_on(
        &self,
        lease: &mut Lease,
        statement: &str,
        params: &[Value],
        deadline: Instant,
        rows: bool,
        reset: bool,
    ) -> Result<Output, SqlError> {
        let budget = self.budget(deadline)?;
        lease.clean = false; // unsure until it completes
        let client = lease.client()?;
        let work = async {
            if client.statement_cache.size() >= STATEMENT_CACHE {
                client.statement_cache.clear();
            }
            let first = self.execute(client, statement, params, rows, reset).await;
            // A cached statement the server no longer has (something
            // deallocated it): prepare it again, once.
            if matches!(&first.0, Err(SqlError::Database { code, .. }) if code == "26000") {
                client.statement_cache.clear();
                return self.execute(client, statement, params, rows, reset).await;
            }
            first
        };
        match tokio::time::timeout(budget, work).await {
            Ok((result, reset_done)) => {
                lease.clean = result_keeps_connection(&result) && (reset_done || !reset);
                result
            }
            Err(_) => {
                lease.cancel();
                Err(SqlError::Timeout(format!(
                    "the statement ran past {} and was cancelled",
                    if budget < self.settings.timeout {
                        "the call's deadline".to_owned()
                    } else {
                        format!(
                            "queues.{}.sql.timeout ({})",
                            self.queue,
                            humantime::format_duration(self.settings.timeout)
                        )
                    }
                )))
            }
        }
    }

    /// Prepares (or takes from the connection's cache) and runs one
    /// statement; with `reset`, the session reset follows it on the wire
    /// (requests on one connection are pipelined, in the order they are
    /// first polled), so it costs no round trip of its own. Returns the
    /// statement's result and whether the reset was done.
    async fn execute(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        statement: &str,
        params: &[Value],
        rows: bool,
        reset: bool,
    ) -> (Result<Output, SqlError>, bool) {
        let prepared = match client.prepare_cached(statement).await {
            Ok(p) => p,
            Err(e) => return (Err(db_error(e)), false),
        };
        let params = match bind(&prepared, params) {
            Ok(p) => p,
            Err(e) => return (Err(e), false),
        };
        let work = async {
            if rows {
                self.query(client, &prepared, &params)
                    .await
                    .map(Output::Rows)
            } else {
                client
                    .execute_raw(&prepared, params.iter().map(|p| p as &dyn ToSql))
                    .await
                    .map(Output::Affected)
                    .map_err(db_error)
            }
        };
        if !reset {
            return (work.await, false);
        }
        let (result, reset) = tokio::join!(work, client.batch_execute(super::sql_session::RESET));
        (result, reset.is_ok())
    }

    async fn query(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        prepared: &Statement,
        params: &[Param],
    ) -> Result<RowSet, SqlError> {
        let columns = prepared
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_owned(),
                data_type: c.type_().name().to_owned(),
            })
            .collect();
        let stream = client
            .query_raw(prepared, params.iter().map(|p| p as &dyn ToSql))
            .await
            .map_err(db_error)?;
        let mut stream = std::pin::pin!(stream);
        let mut set = RowSet {
            columns,
            rows: Vec::new(),
        };
        let mut bytes = 0usize;
        while let Some(row) = stream.next().await {
            let row = row.map_err(db_error)?;
            if set.rows.len() >= self.settings.max_rows as usize {
                return Err(SqlError::Invalid(format!(
                    "the query returned more than queues.{}.sql.max_rows ({}) rows",
                    self.queue, self.settings.max_rows
                )));
            }
            let values = row_values(&row)?;
            bytes += values.iter().map(Value::size).sum::<usize>();
            if bytes > self.settings.max_result_bytes {
                return Err(SqlError::Invalid(format!(
                    "the query returned more than queues.{}.sql.max_result_kib ({} KiB)",
                    self.queue,
                    self.settings.max_result_bytes / 1024
                )));
            }
            set.rows.push(values);
        }
        Ok(set)
    }

    /// Starts a transaction on a connection held until it ends.
    pub async fn begin(&self, deadline: Instant) -> Result<Lease, SqlError> {
        QueueMetrics::add(&self.metrics.sql_statements);
        let result = async {
            let mut lease = self.lease(deadline).await?;
            self.control(&mut lease, "BEGIN", deadline).await?;
            Ok(lease)
        }
        .await;
        if result.is_err() {
            QueueMetrics::add(&self.metrics.sql_failed);
        }
        result
    }

    /// Ends a transaction: `COMMIT` or `ROLLBACK`. The connection goes
    /// back to the pool only if that worked.
    pub async fn end(
        &self,
        mut lease: Lease,
        command: &'static str,
        deadline: Instant,
    ) -> Result<(), SqlError> {
        QueueMetrics::add(&self.metrics.sql_statements);
        let result = self.control(&mut lease, command, deadline).await;
        if result.is_err() {
            QueueMetrics::add(&self.metrics.sql_failed);
        }
        result
    }

    async fn control(
        &self,
        lease: &mut Lease,
        command: &'static str,
        deadline: Instant,
    ) -> Result<(), SqlError> {
        let budget = self.budget(deadline)?;
        lease.clean = false;
        let client = lease.client()?;
        // A transaction's end resets the session too, in the same round
        // trip: the connection goes back to the pool ready for any call.
        let batch = match command {
            "BEGIN" => command.to_owned(),
            end => format!("{end}; {}", super::sql_session::RESET),
        };
        match tokio::time::timeout(budget, client.batch_execute(&batch)).await {
            Ok(Ok(())) => {
                lease.clean = true;
                Ok(())
            }
            Ok(Err(e)) => Err(db_error(e)),
            Err(_) => {
                lease.cancel();
                Err(SqlError::Timeout(format!(
                    "{command} ran past the statement's timeout"
                )))
            }
        }
    }
}

/// Whether a connection is still fit for another call after a statement
/// ended this way: a refusal by the database leaves it usable (outside a
/// transaction); a lost connection, a timeout or an unknown failure does
/// not.
fn result_keeps_connection<T>(result: &Result<T, SqlError>) -> bool {
    matches!(
        result,
        Ok(_) | Err(SqlError::Database { .. } | SqlError::Invalid(_))
    )
}

/// What a statement produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Rows(RowSet),
    Affected(u64),
}

/// A pooled connection in use. Handed back to the pool only when the last
/// thing done on it completed; otherwise (a timeout, a lost connection, a
/// transaction left open) it is closed, which makes the server end the
/// session and roll back what it had open.
pub struct Lease {
    object: Option<Object>,
    clean: bool,
    /// How to reach the server to cancel a statement.
    tls: DbTls,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("clean", &self.clean)
            .finish_non_exhaustive()
    }
}

impl Lease {
    fn client(&self) -> Result<&deadpool_postgres::ClientWrapper, SqlError> {
        self.object
            .as_deref()
            .ok_or_else(|| SqlError::Unavailable("the connection was closed".into()))
    }

    /// Marks the connection as held by an open transaction: closed, not
    /// pooled, if the lease is dropped.
    pub fn hold(&mut self) {
        self.clean = false;
    }

    /// Asks the server to cancel what runs on the connection, and closes
    /// it.
    fn cancel(&mut self) {
        self.clean = false;
        if let Some(object) = self.object.take() {
            let token = object.cancel_token();
            let client = Object::take(object);
            let tls = self.tls.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    tls.cancel(token).await;
                    drop(client);
                });
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.clean {
            self.cancel();
        }
    }
}

/// The error of a parameter that does not convert, carried through
/// tokio-postgres's error as its source.
#[derive(Debug)]
struct ParamError(String);

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for ParamError {}

/// A parameter bound to the type the statement expects.
#[derive(Debug)]
struct Param {
    index: usize,
    value: Value,
}

fn bind(statement: &Statement, params: &[Value]) -> Result<Vec<Param>, SqlError> {
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

fn parse_time(text: &str) -> Option<DateTime<FixedOffset>> {
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
    fn kind(&self) -> &'static str {
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
    fn size(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Binary(b) => b.len(),
            _ => 8,
        }
    }
}

/// A row's values, each the nearest contract value of its column's type.
fn row_values(row: &Row) -> Result<Vec<Value>, SqlError> {
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

/// The SQL state of one call: the queue's database, the call's deadline,
/// and the transaction it has open.
#[derive(Debug, Default)]
pub struct CallSql {
    pub queue: Option<Arc<QueueSql>>,
    pub deadline: Option<Instant>,
    pub transaction: Option<Lease>,
}

impl CallSql {
    fn parts(&self) -> Result<(Arc<QueueSql>, Instant), SqlError> {
        let queue = self.queue.clone().ok_or(SqlError::NotGranted)?;
        let deadline = self.deadline.unwrap_or_else(Instant::now);
        Ok((queue, deadline))
    }

    pub async fn run(
        &mut self,
        statement: &str,
        params: &[Value],
        rows: bool,
    ) -> Result<Output, SqlError> {
        let (queue, deadline) = self.parts()?;
        if statement.len() > 1024 * 1024 {
            return Err(SqlError::Invalid("a statement is at most 1 MiB".into()));
        }
        if let Some(why) = super::sql_session::refusal(statement) {
            return Err(SqlError::Invalid(why));
        }
        let result = queue
            .run(self.transaction.as_mut(), statement, params, deadline, rows)
            .await;
        // A transaction whose connection could not be trusted is over.
        if let Some(t) = &mut self.transaction {
            if t.object.is_none() {
                self.transaction = None;
            } else {
                t.hold();
            }
        }
        result
    }

    pub async fn begin(&mut self) -> Result<(), SqlError> {
        let (queue, deadline) = self.parts()?;
        if self.transaction.is_some() {
            return Err(SqlError::Invalid("a transaction is open already".into()));
        }
        let mut lease = queue.begin(deadline).await?;
        lease.hold();
        self.transaction = Some(lease);
        Ok(())
    }

    pub async fn end(&mut self, command: &'static str) -> Result<(), SqlError> {
        let (queue, deadline) = self.parts()?;
        let Some(lease) = self.transaction.take() else {
            return Err(SqlError::Invalid(format!(
                "{command} without a transaction (begin first; a failure that lost the connection ends the transaction)"
            )));
        };
        queue.end(lease, command, deadline).await
    }

    /// Ends the call: a transaction still open is rolled back by closing
    /// its connection.
    pub fn finish(&mut self) {
        if self.transaction.take().is_some() {
            tracing::debug!("A plugin call ended with a transaction open; it was rolled back.");
        }
    }
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

    #[test]
    fn transient_states() {
        for code in ["40001", "40P01", "53300", "57P01", "08006"] {
            assert!(transient_state(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "57014"] {
            assert!(!transient_state(code), "{code}");
        }
    }
}
