//! Watching queues.toml and the plugin files for changes.
//!
//! Editors and deploy tools replace files by rename, write them in several
//! chunks, or delete and recreate them; Kubernetes and similar tools point a
//! symlink at a file in a folder they swap. So the folders are watched, not
//! the files (a watch on a file is lost when the file is replaced), the
//! folders of symlink targets too, and a file counts as changed when an
//! event names it or its target, or when what it resolves to changed.
//! Changes are debounced: a batch is handed over once the files have been
//! quiet for a moment, or at once (after [`SETTLED`]) when the last event
//! of a changed file says it is whole: renamed into place, or closed by its
//! writer. A file caught half-written (by a writer that closes it between
//! writes) is refused by the loader and picked up again when its last write
//! lands.
//!
//! The debounce runs in a task of its own and hands batches over a channel:
//! a batch waiting to be taken is never lost, whatever the receiver's
//! `select!` does meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long the files must be quiet before a batch of changes is applied.
const QUIET: Duration = Duration::from_millis(200);
/// How long a batch waits for more once its last change left its file
/// whole: the other events of one rename or write are delivered together.
const SETTLED: Duration = Duration::from_millis(10);
/// A batch is applied after this long even if writes go on.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Whether an event says its file is whole now: the file was renamed into
/// place (a deploy's atomic swap, a symlink swapped), or its writer closed
/// it. A file only created or written to may get more writes.
fn leaves_whole(kind: &EventKind, path: usize, paths: usize) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => true,
        // Both names: the second is the new one.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => path + 1 == paths,
        _ => false,
    }
}

/// What identifies the content a path leads to: where its symlinks end, and
/// that file's identity and modification.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    target: Option<PathBuf>,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        target: std::fs::canonicalize(path).ok(),
        inode: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// The files watched and what they resolved to.
#[derive(Debug, Default)]
struct Watched {
    files: BTreeMap<PathBuf, Option<Fingerprint>>,
}

impl Watched {
    /// The files an event on `path` may have changed: the file itself, a
    /// file whose symlink target it is, and any file whose fingerprint moved
    /// (a symlink in its chain was swapped).
    fn changed_by(&mut self, path: &Path) -> BTreeSet<PathBuf> {
        let mut changed = BTreeSet::new();
        for (file, seen) in self.files.iter_mut() {
            let now = fingerprint(file);
            let named = file == path
                || seen
                    .as_ref()
                    .and_then(|f| f.target.as_deref())
                    .is_some_and(|t| t == path);
            if named || now != *seen {
                changed.insert(file.clone());
            }
            *seen = now;
        }
        changed
    }

    /// The folders to watch: each file's, and its symlink target's.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs = BTreeSet::new();
        for (file, seen) in &self.files {
            if let Some(dir) = file.parent() {
                dirs.insert(dir.to_owned());
            }
            if let Some(dir) = seen
                .as_ref()
                .and_then(|f| f.target.as_deref())
                .and_then(Path::parent)
            {
                dirs.insert(dir.to_owned());
            }
        }
        dirs
    }
}

/// Watches a set of files; batches of changed files arrive on
/// [`Watcher::changes`].
pub struct Watcher {
    watched: Arc<Mutex<Watched>>,
    inner: Arc<Mutex<notify::RecommendedWatcher>>,
    dirs: Arc<Mutex<BTreeSet<PathBuf>>>,
    batches: mpsc::Receiver<BTreeSet<PathBuf>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts watching (nothing yet: see [`Watcher::watch`]). The debounce
    /// task runs until the watcher is dropped.
    pub fn new() -> Result<Self> {
        Self::with_delays(QUIET, MAX_DELAY)
    }

    fn with_delays(quiet: Duration, max_delay: Duration) -> Result<Self> {
        let (tx, mut events) = mpsc::unbounded_channel::<(PathBuf, bool)>();
        let inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) => {
                    // Reads (our own among them) are not changes; a writer
                    // closing its file is.
                    let closed = matches!(
                        event.kind,
                        EventKind::Access(AccessKind::Close(AccessMode::Write))
                    );
                    if matches!(event.kind, EventKind::Access(_)) && !closed {
                        return;
                    }
                    let paths = event.paths.len();
                    for (i, path) in event.paths.into_iter().enumerate() {
                        let _ = tx.send((path, leaves_whole(&event.kind, i, paths)));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "File watch error."),
            }
        })
        .context("starting the file watcher")?;
        let watched = Arc::new(Mutex::new(Watched::default()));
        let inner = Arc::new(Mutex::new(inner));
        let dirs = Arc::new(Mutex::new(BTreeSet::new()));
        let (batch_tx, batches) = mpsc::channel(16);
        let state = watched.clone();
        let (watcher, watched_dirs) = (inner.clone(), dirs.clone());
        tokio::spawn(async move {
            loop {
                let mut changed = BTreeSet::new();
                // The changed files the last event of which did not leave
                // them whole.
                let mut unfinished = BTreeSet::new();
                // Wait for a change to a watched file...
                while changed.is_empty() {
                    // Ends with the watcher: its receiver gone.
                    let event = tokio::select! {
                        event = events.recv() => event,
                        _ = batch_tx.closed() => None,
                    };
                    let Some((path, leaves_whole)) = event else {
                        return;
                    };
                    let files = changed_by(&state, path).await;
                    note(&mut unfinished, &files, leaves_whole);
                    changed = files;
                }
                // ...then for quiet, or for every changed file to be whole.
                let deadline = tokio::time::Instant::now() + max_delay;
                loop {
                    let wait = if unfinished.is_empty() {
                        SETTLED
                    } else {
                        quiet
                    };
                    let until = tokio::time::Instant::now() + wait;
                    match tokio::time::timeout_at(until.min(deadline), events.recv()).await {
                        Ok(Some((path, leaves_whole))) => {
                            let files = changed_by(&state, path).await;
                            note(&mut unfinished, &files, leaves_whole);
                            changed.extend(files);
                        }
                        Ok(None) => return,
                        Err(_) => break,
                    }
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
                // A symlink may now point into another folder.
                let (state, watcher, watched_dirs) =
                    (state.clone(), watcher.clone(), watched_dirs.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let dirs = state.lock().expect("watch lock").dirs();
                    sync_dirs(&watcher, &watched_dirs, dirs);
                })
                .await;
                if batch_tx.send(changed).await.is_err() {
                    return;
                }
            }
        });
        Ok(Watcher {
            watched,
            inner,
            dirs,
            batches,
        })
    }

    /// Watches exactly `files` from now on. The files are looked at off
    /// the async runtime.
    pub async fn watch(&mut self, files: BTreeSet<PathBuf>) {
        let (watched, inner, dirs) = (self.watched.clone(), self.inner.clone(), self.dirs.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let wanted = {
                let mut w = watched.lock().expect("watch lock");
                let mut next = BTreeMap::new();
                for file in files {
                    let seen = w.files.remove(&file).unwrap_or_else(|| fingerprint(&file));
                    next.insert(file, seen);
                }
                w.files = next;
                w.dirs()
            };
            sync_dirs(&inner, &dirs, wanted);
        })
        .await;
    }

    /// The next batch of changed files. Cancel-safe: a batch not taken now
    /// waits for the next call.
    pub async fn changes(&mut self) -> BTreeSet<PathBuf> {
        match self.batches.recv().await {
            Some(batch) => batch,
            None => std::future::pending().await,
        }
    }
}

/// The watched files an event on `path` may have changed, looked at off
/// the async runtime (each is a `stat` and a `realpath`).
/// Records what an event did to `files`: left them whole, or not.
fn note(unfinished: &mut BTreeSet<PathBuf>, files: &BTreeSet<PathBuf>, whole: bool) {
    for file in files {
        if whole {
            unfinished.remove(file);
        } else {
            unfinished.insert(file.clone());
        }
    }
}

async fn changed_by(state: &Arc<Mutex<Watched>>, path: PathBuf) -> BTreeSet<PathBuf> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.lock().expect("watch lock").changed_by(&path))
        .await
        .unwrap_or_default()
}

fn sync_dirs(
    watcher: &Mutex<notify::RecommendedWatcher>,
    current: &Mutex<BTreeSet<PathBuf>>,
    wanted: BTreeSet<PathBuf>,
) {
    let mut watcher = watcher.lock().expect("watcher lock");
    let mut current = current.lock().expect("watch lock");
    for gone in current.difference(&wanted) {
        let _ = watcher.unwatch(gone);
    }
    for dir in wanted.difference(&current) {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::error!(dir = %dir.display(), error = %e, "Cannot watch a folder; changes in it will not be reloaded.");
        }
    }
    *current = wanted;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchyard-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_change_to_a_symlink_target_is_seen() {
        let dir = tempdir("symlink");
        let real = tempdir("symlink-target");
        let target = real.join("plugin.wasm");
        std::fs::write(&target, b"one").unwrap();
        let link = dir.join("plugin.wasm");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut w = Watcher::new().unwrap();
        w.watch([link.clone()].into()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&target, b"two, longer").unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(10), w.changes())
            .await
            .expect("the target's change was not seen");
        assert_eq!(changed, [link].into());
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(real);
    }

    #[tokio::test]
    async fn a_swapped_symlink_is_seen() {
        // The shape Kubernetes gives mounted files: file -> ..data/file,
        // ..data -> a folder that is replaced by a new one on each update.
        let dir = tempdir("swap");
        for (v, text) in [("v1", "one"), ("v2", "two")] {
            std::fs::create_dir_all(dir.join(v)).unwrap();
            std::fs::write(dir.join(v).join("queues.toml"), text).unwrap();
        }
        std::os::unix::fs::symlink("v1", dir.join("..data")).unwrap();
        let file = dir.join("queues.toml");
        std::os::unix::fs::symlink("..data/queues.toml", &file).unwrap();
        let mut w = Watcher::new().unwrap();
        w.watch([file.clone()].into()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(10), w.changes())
            .await
            .expect("the swap was not seen");
        assert_eq!(changed, [file].into());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_file_left_whole_is_handed_over_without_waiting_for_quiet() {
        use std::io::Write;
        let dir = tempdir("whole");
        let file = dir.join("plugin.wasm");
        std::fs::write(&file, b"one").unwrap();
        // Quiet and the longest delay far beyond the test's patience: only
        // a file left whole is handed over in time.
        let long = Duration::from_secs(60);
        let mut w = Watcher::with_delays(long, long).unwrap();
        w.watch([file.clone()].into()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let patience = Duration::from_secs(10);

        // Renamed into place.
        let tmp = dir.join("plugin.wasm.tmp");
        std::fs::write(&tmp, b"two").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let changed = tokio::time::timeout(patience, w.changes())
            .await
            .expect("a file renamed into place waited for quiet");
        assert_eq!(changed, [file.clone()].into());

        // Written in place: not while its writer holds it open...
        let mut writer = std::fs::File::create(&file).unwrap();
        writer.write_all(b"three, half").unwrap();
        writer.flush().unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), w.changes())
                .await
                .is_err(),
            "a file still being written was handed over"
        );
        // ...and once it closes it.
        writer.write_all(b", whole").unwrap();
        drop(writer);
        let changed = tokio::time::timeout(patience, w.changes())
            .await
            .expect("a file closed by its writer waited for quiet");
        assert_eq!(changed, [file].into());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_batch_waits_for_every_file_in_it_to_be_whole() {
        use std::io::Write;
        let dir = tempdir("whole-two");
        let (plugin, toml) = (dir.join("plugin.wasm"), dir.join("queues.toml"));
        std::fs::write(&plugin, b"one").unwrap();
        std::fs::write(&toml, b"one").unwrap();
        let long = Duration::from_secs(60);
        let mut w = Watcher::with_delays(long, long).unwrap();
        w.watch([plugin.clone(), toml.clone()].into()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The plugin still being written when queues.toml is renamed into
        // place: the batch waits for the plugin.
        let mut writer = std::fs::File::create(&plugin).unwrap();
        writer.write_all(b"two, half").unwrap();
        writer.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tmp = dir.join("queues.toml.tmp");
        std::fs::write(&tmp, b"two").unwrap();
        std::fs::rename(&tmp, &toml).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), w.changes())
                .await
                .is_err(),
            "a batch with a file still being written was handed over"
        );
        writer.write_all(b", whole").unwrap();
        drop(writer);
        let changed = tokio::time::timeout(Duration::from_secs(10), w.changes())
            .await
            .expect("the batch waited for quiet once both were whole");
        assert_eq!(changed, [plugin, toml].into());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_batch_waits_for_a_receiver_that_was_busy() {
        let dir = tempdir("busy");
        let file = dir.join("queues.toml");
        std::fs::write(&file, b"one").unwrap();
        let mut w = Watcher::new().unwrap();
        w.watch([file.clone()].into()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Written and held open: the batch waits for quiet.
        let mut writer = std::fs::File::create(&file).unwrap();
        std::io::Write::write_all(&mut writer, b"two").unwrap();
        // A receiver that gives up (a select! another branch won) before the
        // batch is ready...
        assert!(
            tokio::time::timeout(Duration::from_millis(50), w.changes())
                .await
                .is_err()
        );
        // ...still gets it later.
        let changed = tokio::time::timeout(Duration::from_secs(10), w.changes())
            .await
            .expect("the change was lost");
        assert_eq!(changed, [file].into());
        drop(writer);
        let _ = std::fs::remove_dir_all(dir);
    }
}
