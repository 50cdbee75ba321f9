//! A queue's database: its pool of connections, the statements run on
//! them within their timeouts, and the leases that hand a connection back
//! only clean.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use super::*;
use crate::config::SqlSettings;
use crate::metrics::QueueMetrics;

/// Prepared statements one connection keeps; past this its cache is
/// emptied (a plugin building statements on the fly must not grow it
/// without bound).
pub(super) const STATEMENT_CACHE: usize = 512;

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
        self.metrics.timed(crate::kinds::Capability::Sql, started);
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
        let (result, reset) = tokio::join!(work, client.batch_execute(super::session::RESET));
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
            end => format!("{end}; {}", super::session::RESET),
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
pub(super) fn result_keeps_connection<T>(result: &Result<T, SqlError>) -> bool {
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
    pub(super) object: Option<Object>,
    pub(super) clean: bool,
    /// How to reach the server to cancel a statement.
    pub(super) tls: DbTls,
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
