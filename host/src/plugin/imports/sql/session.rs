//! What keeps a pooled database connection clean between calls.
//!
//! Connections outlive calls (and plugin versions): whatever one call
//! leaves in its session, the next call on that connection inherits. Two
//! guards keep every call's session clean:
//!
//! - [`refusal`]: statements that control the transaction or change the
//!   session (`BEGIN`, `COMMIT`, `SET`, `RESET`, `DISCARD`, `DEALLOCATE`,
//!   `LISTEN`, ...) are refused before they reach the server: a
//!   transaction is `begin` / `commit` / `rollback`, and a setting for one
//!   transaction is `SET LOCAL` inside it.
//! - [`RESET`]: what a statement can still change through a function
//!   (`set_config(..., false)`, `pg_advisory_lock`, a temporary table) is
//!   undone before the connection goes back to the pool.

/// Sent after the last statement a call runs on a pooled connection, in
/// the same round trip (after a statement of its own, or with the
/// transaction's `COMMIT` or `ROLLBACK`): puts back the role, every
/// setting, locks, listeners, cursors, temporary tables and sequence state
/// as a new session has them. Settings given at connect
/// (`statement_timeout`, `TimeZone`) are the session's defaults, so `RESET
/// ALL` keeps them. Prepared statements stay: the statement cache depends
/// on them (`DEALLOCATE` is refused). No transaction is ever open here: a
/// connection whose transaction did not end cleanly is closed, not pooled.
pub const RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
     SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// Why a statement is refused, or `None` if it may run: the same inside a
/// transaction the call opened with `begin` and outside one.
pub fn refusal(statement: &str) -> Option<String> {
    let mut words = Words::new(statement);
    let first = words.next()?.to_ascii_uppercase();
    let second = words.next().map(|w| w.to_ascii_uppercase());
    let transaction = "is refused: use the sql interface's begin, commit and rollback";
    let session = "is refused: it would change the session of later calls";
    let why = match first.as_str() {
        "BEGIN" | "START" | "COMMIT" | "END" | "ABORT" => transaction.to_owned(),
        // ROLLBACK TO SAVEPOINT stays inside the call's transaction
        // (outside one, the server refuses it).
        "ROLLBACK" => {
            let to = second.as_deref() == Some("TO")
                || (matches!(second.as_deref(), Some("WORK" | "TRANSACTION"))
                    && words.next().is_some_and(|w| w.eq_ignore_ascii_case("TO")));
            if to {
                return None;
            }
            transaction.to_owned()
        }
        "PREPARE" if second.as_deref() == Some("TRANSACTION") => transaction.to_owned(),
        "PREPARE" | "DEALLOCATE" => {
            format!("{session} (the host prepares and caches statements itself)")
        }
        "SET" => match second.as_deref() {
            // For the current transaction only.
            Some("LOCAL" | "TRANSACTION" | "CONSTRAINTS") => return None,
            _ => format!("{session}: use SET LOCAL inside a transaction"),
        },
        "RESET" | "DISCARD" | "LISTEN" | "UNLISTEN" | "LOAD" => session.to_owned(),
        _ => return None,
    };
    Some(format!("{first} {why}"))
}

/// The leading words of a statement, past whitespace, comments and
/// opening parentheses.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn new(text: &'a str) -> Self {
        Words { rest: text }
    }

    fn skip_blank(&mut self) {
        loop {
            let trimmed = self
                .rest
                .trim_start_matches(|c: char| c.is_whitespace() || c == '(');
            if let Some(after) = trimmed.strip_prefix("--") {
                self.rest = after.find('\n').map_or("", |i| &after[i + 1..]);
            } else if trimmed.starts_with("/*") {
                self.rest = skip_block_comment(trimmed);
            } else {
                self.rest = trimmed;
                return;
            }
        }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.skip_blank();
        let end = self
            .rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word)
    }
}

/// `text` past the block comment it starts with; PostgreSQL's block
/// comments nest.
fn skip_block_comment(text: &str) -> &str {
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return &text[i..];
                }
            }
            _ => i += 1,
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_and_session_statements_are_refused() {
        let refused = [
            "BEGIN",
            "begin;",
            "  BEGIN ISOLATION LEVEL SERIALIZABLE",
            "START TRANSACTION",
            "COMMIT",
            "commit prepared 'x'",
            "END",
            "ABORT",
            "ROLLBACK",
            "rollback work",
            "PREPARE TRANSACTION 'x'",
            "PREPARE s AS SELECT 1",
            "DEALLOCATE ALL",
            "deallocate prepare s",
            "SET ROLE other",
            "SET statement_timeout = 0",
            "set search_path to evil",
            "SET SESSION AUTHORIZATION other",
            "SET SESSION statement_timeout = 0",
            "RESET ALL",
            "RESET ROLE",
            "DISCARD ALL",
            "LISTEN ch",
            "UNLISTEN *",
            "LOAD 'auto_explain'",
            "-- a comment\nBEGIN",
            "/* one /* nested */ comment */ SET ROLE x",
            "(BEGIN)",
        ];
        for s in refused {
            assert!(refusal(s).is_some(), "{s:?} allowed");
        }
        let allowed = [
            "SELECT 1",
            "INSERT INTO t VALUES ($1)",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "(SELECT 1) UNION (SELECT 2)",
            "SET LOCAL statement_timeout = 100",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "SAVEPOINT a",
            "RELEASE SAVEPOINT a",
            "ROLLBACK TO SAVEPOINT a",
            "ROLLBACK WORK TO a",
            "SELECT set_config('x.y', '1', true)",
            "settings_table_select",
            "-- BEGIN\nSELECT 1",
            "",
            "   ",
        ];
        for s in allowed {
            assert_eq!(refusal(s), None, "{s:?}");
        }
        assert_eq!(
            refusal("begin").unwrap(),
            "BEGIN is refused: use the sql interface's begin, commit and rollback"
        );
    }
}
