//! The SQL state of one call: the queue's database, the call's deadline,
//! and the transaction it has open.

use std::sync::Arc;
use std::time::Instant;

use super::*;

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
        if let Some(why) = super::session::refusal(statement) {
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
