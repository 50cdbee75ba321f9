//! Checking a queue's grants: key-value state, SQL and mail.

use std::time::Duration;

use super::super::defaults as d;
use super::super::parse::join;
use super::super::raw::{RawKeyValue, RawMail, RawSql};
use super::super::{KeyValueGrant, MAX_DURATION, MailSettings, SqlSettings};
use super::context::{Context, ca_file, maybe_secret};
use super::{Checker, FileKind, Pending, Target};

pub(super) fn keyvalue(c: &mut Checker<'_>, cx: &Context<'_>, k: &RawKeyValue) -> KeyValueGrant {
    let key = |part: &str| join(&cx.key("keyvalue"), part);
    KeyValueGrant {
        max_keys: c.int(
            &key("max_keys"),
            k.max_keys.as_ref(),
            d::KV_MAX_KEYS,
            1..=100_000_000,
        ) as u64,
        max_bytes: c.int(
            &key("max_kib"),
            k.max_kib.as_ref(),
            d::KV_MAX_KIB,
            1..=64 * 1024 * 1024,
        ) as u64
            * 1024,
        ttl: k
            .ttl
            .as_ref()
            .map(|t| c.duration(&key("ttl"), Some(t), Duration::ZERO, MAX_DURATION * 10)),
    }
}

/// `[queues.X.sql]`: what needs the URL's value (its form, its `sslmode`)
/// is checked by resolve, once the value is known.
pub(super) fn sql(
    c: &mut Checker<'_>,
    cx: &Context<'_>,
    s: &RawSql,
    handler_timeout: Duration,
    pending: &mut Vec<Pending>,
) -> Option<SqlSettings> {
    let key = |part: &str| join(&cx.key("sql"), part);
    let before = c.errors.len();
    let url = maybe_secret(
        c,
        &key("database_url"),
        s.database_url.as_ref(),
        Target::DatabaseUrl(cx.name.to_owned()),
        pending,
    );
    if s.database_url.is_none() {
        c.error(&key("database_url"), "is required");
    }
    let ca_file = ca_file(c, &key("ca_file"), s.ca_file.as_ref(), cx.base);
    let pool = c.int(&key("pool"), s.pool.as_ref(), d::SQL_POOL, 1..=256) as u32;
    let timeout = c.duration(
        &key("timeout"),
        s.timeout.as_ref(),
        d::SQL_TIMEOUT.min(handler_timeout),
        MAX_DURATION,
    );
    if timeout > handler_timeout {
        c.warn(
            &key("timeout"),
            "is longer than handler_timeout; a statement never runs past the handler's deadline",
        );
    }
    let max_rows = c.int(
        &key("max_rows"),
        s.max_rows.as_ref(),
        d::SQL_MAX_ROWS,
        1..=10_000_000,
    ) as u32;
    let max_result_kib = c.int(
        &key("max_result_kib"),
        s.max_result_kib.as_ref(),
        d::SQL_MAX_RESULT_KIB,
        1..=1024 * 1024,
    ) as usize;
    let migrations = c
        .get(
            &key("migrations"),
            s.migrations.as_ref(),
            "a folder of .sql files",
        )
        .map(|p| cx.base.join(p));
    if let Some(dir) = &migrations {
        c.file(&key("migrations"), dir.clone(), FileKind::Folder);
    }
    if c.errors.len() > before {
        return None;
    }
    Some(SqlSettings {
        database_url: url?,
        ca_file,
        pool,
        timeout,
        max_rows,
        max_result_bytes: max_result_kib * 1024,
        migrations,
    })
}

/// `[queues.X.mail]`: the relay's URL is read by resolve, once its value
/// (and the credentials') are known.
pub(super) fn mail(
    c: &mut Checker<'_>,
    cx: &Context<'_>,
    m: &RawMail,
    handler_timeout: Duration,
    pending: &mut Vec<Pending>,
) -> Option<MailSettings> {
    let key = |part: &str| join(&cx.key("mail"), part);
    let before = c.errors.len();
    let name = || cx.name.to_owned();
    let url = maybe_secret(
        c,
        &key("smtp_url"),
        m.smtp_url.as_ref(),
        Target::SmtpUrl(name()),
        pending,
    );
    if m.smtp_url.is_none() {
        c.error(&key("smtp_url"), "is required");
    }
    let username = maybe_secret(
        c,
        &key("username"),
        m.username.as_ref(),
        Target::MailUser(name()),
        pending,
    );
    let password = maybe_secret(
        c,
        &key("password"),
        m.password.as_ref(),
        Target::MailPassword(name()),
        pending,
    );
    if username.is_some() != password.is_some() {
        c.error(
            &key(if username.is_some() {
                "password"
            } else {
                "username"
            }),
            "username and password go together",
        );
    }
    let ca_file = ca_file(c, &key("ca_file"), m.ca_file.as_ref(), cx.base);
    let pool = c.int(&key("pool"), m.pool.as_ref(), d::MAIL_POOL, 0..=256) as u32;
    let timeout = c.duration(
        &key("timeout"),
        m.timeout.as_ref(),
        d::MAIL_TIMEOUT.min(handler_timeout),
        MAX_DURATION,
    );
    if timeout > handler_timeout {
        c.warn(
            &key("timeout"),
            "is longer than handler_timeout; a mail is never sent past the handler's deadline",
        );
    }
    let from = c
        .get(
            &key("from"),
            m.from.as_ref(),
            "an array of addresses (\"@domain\" for any at it)",
        )
        .cloned()
        .unwrap_or_default();
    for f in &from {
        if !f.contains('@') || f.chars().any(char::is_whitespace) {
            c.error(
                &key("from"),
                format!("{f:?} is neither an address nor \"@domain\""),
            );
        }
    }
    let max_per_call = c.int(
        &key("max_per_call"),
        m.max_per_call.as_ref(),
        d::MAIL_MAX_PER_CALL,
        1..=1000,
    ) as u32;
    let max_recipients = c.int(
        &key("max_recipients"),
        m.max_recipients.as_ref(),
        d::MAIL_MAX_RECIPIENTS,
        1..=10_000,
    ) as u32;
    let max_kib = c.int(
        &key("max_kib"),
        m.max_kib.as_ref(),
        d::MAIL_MAX_KIB,
        1..=64 * 1024,
    ) as usize;
    if c.errors.len() > before {
        return None;
    }
    Some(MailSettings {
        smtp_url: url?,
        username,
        password,
        ca_file,
        pool,
        timeout,
        from,
        max_per_call,
        max_recipients,
        max_bytes: max_kib * 1024,
    })
}
