//! Why a statement failed, as the contract's `error` says it, and which
//! failures are worth trying again.

use std::error::Error as StdError;

use deadpool_postgres::PoolError;

use super::*;

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
pub(super) fn transient_state(code: &str) -> bool {
    code.starts_with("40")
        || code.starts_with("53")
        || code.starts_with("08")
        || code.starts_with("57P")
}

pub(super) fn db_error(e: tokio_postgres::Error) -> SqlError {
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

pub(super) fn pool_error(e: PoolError) -> SqlError {
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
pub(super) fn with_causes(e: &dyn StdError) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
