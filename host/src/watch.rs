//! Watching queues.toml and the plugin files for changes.
//!
//! Editors and deploy tools replace files by rename, write them in several
//! chunks, or delete and recreate them. So the folders are watched, not the
//! files (a watch on a file is lost when the file is replaced), and changes
//! are debounced: a batch is handed over once the files have been quiet for
//! a moment. A file caught half-written is refused by the loader and picked
//! up again when its last write lands.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long the files must be quiet before a batch of changes is applied.
const QUIET: Duration = Duration::from_millis(200);
/// A batch is applied after this long even if writes go on.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Watches a set of files through their folders.
pub struct Watcher {
    inner: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<PathBuf>,
    files: BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    pub fn new() -> Result<Self> {
        let (tx, events) = mpsc::unbounded_channel();
        let inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                // Reads (our own among them) are not changes.
                Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
                Ok(event) => {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "File watch error."),
            }
        })
        .context("starting the file watcher")?;
        Ok(Watcher {
            inner,
            events,
            files: BTreeSet::new(),
            dirs: BTreeSet::new(),
        })
    }

    /// Watches exactly `files` from now on.
    pub fn watch(&mut self, files: BTreeSet<PathBuf>) {
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_owned))
            .collect();
        for gone in self.dirs.difference(&dirs) {
            let _ = self.inner.unwatch(gone);
        }
        for dir in dirs.difference(&self.dirs) {
            if let Err(e) = self.inner.watch(dir, RecursiveMode::NonRecursive) {
                tracing::error!(dir = %dir.display(), error = %e, "Cannot watch a folder; changes in it will not be reloaded.");
            }
        }
        self.dirs = dirs;
        self.files = files;
    }

    /// Waits for changes to the watched files, then for them to be quiet,
    /// and returns the files that changed.
    pub async fn changes(&mut self) -> BTreeSet<PathBuf> {
        let mut changed = BTreeSet::new();
        loop {
            let Some(first) = self.events.recv().await else {
                return std::future::pending().await;
            };
            if self.files.contains(&first) {
                changed.insert(first);
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        loop {
            let quiet = tokio::time::Instant::now() + QUIET;
            match tokio::time::timeout_at(quiet.min(deadline), self.events.recv()).await {
                Ok(Some(path)) => {
                    if self.files.contains(&path) {
                        changed.insert(path);
                    }
                }
                Ok(None) | Err(_) => break,
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        changed
    }
}
