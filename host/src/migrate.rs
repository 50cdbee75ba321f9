//! `switchyard migrate`: applies a queue's schema migrations to its
//! database.
//!
//! A queue's `sql.migrations` folder holds files named
//! `<version>_<name>.sql` (`0001_chat_events.sql`), applied in the order of
//! their versions, each in a transaction of its own together with its
//! record in `switchyard_migrations` (version, name, SHA-256, time). A
//! version already applied is skipped; one whose file changed since is an
//! error, since the database no longer matches what the folder says. Runs
//! hold an advisory lock, so two at once apply each file once.
//!
//! The host does not migrate on its own at start: a schema change can
//! lock a large table for a long time, which an operator schedules, and
//! the database role the plugins' statements use needs no right to change
//! the schema.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::config::QueueConfig;
use crate::plugin::sql::DbTls;

/// The largest migration file read.
const MAX_MIGRATION_BYTES: u64 = 16 << 20;

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    pub checksum: String,
}

/// What a run did for one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub applied: Vec<String>,
    pub already: usize,
}

/// The migrations of a folder, in version order.
pub fn read_folder(dir: &Path) -> Result<Vec<Migration>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_suffix(".sql") else {
            continue;
        };
        let Some((version, name)) = stem.split_once('_') else {
            bail!(
                "{}: a migration is named <version>_<name>.sql",
                path.display()
            );
        };
        let version: i64 = version.parse().with_context(|| {
            format!(
                "{}: the version {version:?} is not a number",
                path.display()
            )
        })?;
        let sql = crate::files::read_text(&path, MAX_MIGRATION_BYTES)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let checksum = Sha256::digest(sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        found.push(Migration {
            version,
            name: name.to_owned(),
            path,
            sql,
            checksum,
        });
    }
    found.sort_by_key(|m| m.version);
    for pair in found.windows(2) {
        if pair[0].version == pair[1].version {
            bail!(
                "{} and {} have the same version",
                pair[0].path.display(),
                pair[1].path.display()
            );
        }
    }
    Ok(found)
}

/// Applies what the queue's folder has and its database lacks.
pub async fn migrate(queue: &QueueConfig) -> Result<Report> {
    migrate_with(queue, |_| {}).await
}

/// A step of [`migrate_with`], for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// The folder is read: this many migrations.
    Found(usize),
    /// This one is being applied.
    Applying(&'a Migration),
    /// This one is done: applied now (`true`) or before.
    Done(&'a Migration, bool),
}

/// [`migrate`], telling `progress` each step.
pub async fn migrate_with(
    queue: &QueueConfig,
    mut progress: impl FnMut(Step<'_>),
) -> Result<Report> {
    let Some(sql) = &queue.sql else {
        bail!("queues.{} has no [sql] table", queue.name);
    };
    let Some(dir) = &sql.migrations else {
        bail!("queues.{}.sql has no migrations folder", queue.name);
    };
    let migrations = read_folder(dir)?;
    progress(Step::Found(migrations.len()));
    let config: tokio_postgres::Config = sql.database_url.parse()?;
    let (mut client, connection) = DbTls::new(&config, sql.ca_file.as_ref())?
        .connect(&config)
        .await
        .with_context(|| format!("connecting to the database of queues.{}", queue.name))?;
    let result = apply(&mut client, &migrations, &mut progress).await;
    drop(client);
    let _ = connection.await;
    result
}

async fn apply(
    client: &mut tokio_postgres::Client,
    migrations: &[Migration],
    progress: &mut impl FnMut(Step<'_>),
) -> Result<Report> {
    client
        .batch_execute(
            // No NOTICE that the table exists already on every run; the
            // migrations' own notices are shown.
            "SET client_min_messages TO warning;
             SELECT pg_advisory_lock(hashtext('switchyard_migrations'));
             CREATE TABLE IF NOT EXISTS switchyard_migrations (
                 version bigint PRIMARY KEY,
                 name text NOT NULL,
                 checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );
             RESET client_min_messages;",
        )
        .await
        .context("preparing switchyard_migrations")?;
    let mut report = Report::default();
    for m in migrations {
        let row = client
            .query_opt(
                "SELECT name, checksum FROM switchyard_migrations WHERE version = $1",
                &[&m.version],
            )
            .await?;
        if let Some(row) = row {
            let checksum: String = row.get(1);
            if checksum != m.checksum {
                bail!(
                    "{} was changed after it was applied (its SHA-256 was {checksum}): add a new migration instead",
                    m.path.display()
                );
            }
            report.already += 1;
            progress(Step::Done(m, false));
            continue;
        }
        progress(Step::Applying(m));
        let tx = client.transaction().await?;
        tx.batch_execute(&m.sql)
            .await
            .with_context(|| format!("applying {}", m.path.display()))?;
        tx.execute(
            "INSERT INTO switchyard_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum],
        )
        .await?;
        tx.commit().await?;
        progress(Step::Done(m, true));
        report.applied.push(
            m.path
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
        );
    }
    client
        .batch_execute("SELECT pg_advisory_unlock(hashtext('switchyard_migrations'))")
        .await?;
    Ok(report)
}
