//! `switchyard migrate`: applies the schema migrations of the queues that
//! have a `sql.migrations` folder (or of one), with a progress per file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use switchyard::config::{Config, Needs, process_env};
use switchyard::migrate::Step;

use crate::print_out;
use crate::progress::Progress;

pub(crate) async fn migrate(config: &Path, queue: Option<String>) -> Result<ExitCode> {
    // The databases: their secrets and CA files; no plugin is read.
    let config = Config::load_with(config, &process_env, Needs::DATABASES)?;
    let queues: Vec<_> = config
        .queues
        .values()
        .filter(|q| queue.as_deref().is_none_or(|n| n == q.name))
        .filter(|q| q.sql.as_ref().is_some_and(|s| s.migrations.is_some()))
        .collect();
    if queues.is_empty() {
        anyhow::bail!(
            "no queue{} has a sql.migrations folder",
            queue.map_or(String::new(), |q| format!(" named {q}"))
        );
    }
    for q in queues {
        let mut progress: Option<Progress> = None;
        // The first failure to print, kept: the callback cannot return it.
        let mut printed: Result<()> = Ok(());
        let file = |m: &switchyard::migrate::Migration| {
            m.path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        };
        let report = switchyard::migrate::migrate_with(q, |step| match step {
            Step::Found(n) => progress = Some(Progress::new("migrate", n as u64)),
            Step::Applying(m) => {
                if let Some(p) = &progress {
                    p.show_step(&format!("{}: {}", q.name, file(m)));
                }
            }
            Step::Done(m, applied) => {
                if let Some(p) = &mut progress {
                    if applied && printed.is_ok() {
                        printed = p.println(&format!("{}: applied {}\n", q.name, file(m)));
                    }
                    p.advance(1);
                }
            }
        })
        .await;
        if let Some(p) = progress {
            p.finish();
        }
        let report = report?;
        printed?;
        print_out(&format!(
            "{}: {} applied now, {} before\n",
            q.name,
            report.applied.len(),
            report.already
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
