//! The compiler child's cache of compiled functions (Cranelift's
//! incremental compilation), on disk beside the compiled components.
//!
//! A new version of a Python or JavaScript plugin is a new 13 to 22 MB
//! component, but nearly all of its code is the same interpreter: what
//! changed is the application, which lives in the memory snapshot, not in
//! the functions. Cranelift keys each function by a hash of its content
//! (and the compiler's settings), so with this cache a new version compiles
//! only the functions it does not share with one compiled before.
//!
//! Each entry is a file named by the SHA-256 of Cranelift's key, in one of
//! 256 folders, written by the child that compiled the function to a
//! temporary file of its own (process, and a counter: the child compiles
//! on several threads, and identical functions share a key) and renamed
//! into place, so a reader sees a whole entry or none. An entry cut short
//! (the child killed mid-write) is at worst a temporary file, deleted by
//! the sweep. Entries not read for [`KEEP`] are deleted, at most once a
//! day: the cache holds what the plugins of the last weeks use; the
//! folders of other engines (another wasmtime, other settings) go when
//! none of their entries was read for as long. The folder is inside the
//! plugin cache, which only the host's user may write (see `cache.rs`): an
//! entry is native code.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// How long an entry no compile read is kept (a compiled component no
/// load read, too: `cache.rs`).
pub(super) const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often a read entry's time is renewed, and the folder swept.
pub(super) const RENEW: Duration = Duration::from_secs(24 * 3600);

/// Cranelift's store of compiled functions, in one engine's folder.
#[derive(Debug)]
pub struct FunctionCache {
    /// `functions-<engine key>` in the plugin cache.
    dir: PathBuf,
}

/// Tells apart the temporary files of one process's threads.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

impl FunctionCache {
    pub fn new(dir: &Path) -> Self {
        FunctionCache {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let name = super::hex(&Sha256::digest(key));
        self.dir.join(&name[..2]).join(&name[2..])
    }

    /// Deletes the entries nobody read for [`KEEP`] and the temporary files
    /// left behind, if the last sweep is a day old or more; and the folders
    /// of other engines not swept for [`KEEP`] (no host of theirs ran).
    /// Failures are ignored: the cache is an optimisation.
    pub fn sweep(&self) {
        let marker = self.dir.join("swept");
        let due = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .map_or(true, |t| age(t) >= RENEW);
        if !due {
            return;
        }
        let _ = std::fs::create_dir_all(&self.dir);
        let _ = std::fs::write(&marker, b"");
        let Ok(shards) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for shard in shards.flatten().filter(|s| s.path().is_dir()) {
            let Ok(entries) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let modified = entry.metadata().and_then(|m| m.modified()).ok();
                let temporary = entry.file_name().to_string_lossy().contains(".tmp");
                let old = modified.is_some_and(|t| age(t) >= KEEP);
                let stale = temporary && modified.is_some_and(|t| age(t) >= RENEW);
                if old || stale {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let (Some(parent), Some(own)) = (self.dir.parent(), self.dir.file_name()) else {
            return;
        };
        let Ok(siblings) = std::fs::read_dir(parent) else {
            return;
        };
        for sibling in siblings.flatten() {
            let name = sibling.file_name();
            if name == own || !name.to_string_lossy().starts_with("functions-") {
                continue;
            }
            let abandoned = std::fs::metadata(sibling.path().join("swept"))
                .and_then(|m| m.modified())
                .is_ok_and(|t| age(t) >= KEEP);
            if abandoned {
                let _ = std::fs::remove_dir_all(sibling.path());
            }
        }
    }
}

pub(super) fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

/// Sets a file's time to now if it is a day old or more: read, it is kept
/// for another [`KEEP`] (once a day is enough for a 30-day rule, and spares
/// the writes). Here and for the compiled components (`cache.rs`).
pub(super) fn renew(path: &Path) {
    if let Ok(file) = std::fs::File::open(path)
        && file
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| age(t) >= RENEW)
    {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Ages a file by `age` (the sweeps' tests).
#[cfg(test)]
pub(super) fn set_age(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let path = self.path(key);
        renew(&path);
        std::fs::read(&path).ok().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        let Some(shard) = path.parent() else {
            return false;
        };
        if std::fs::create_dir_all(shard).is_err() {
            return false;
        }
        let tmp = path.with_extension(format!(
            "tmp{}-{}",
            std::process::id(),
            TEMPORARY.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::write(&tmp, &value).and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::CacheStore;

    use super::*;

    #[test]
    fn entries_are_kept_read_and_swept_when_old() {
        let root =
            std::env::temp_dir().join(format!("switchyard-functions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("functions-new");
        let cache = FunctionCache::new(&dir);
        cache.sweep();
        assert!(cache.get(b"k1").is_none());
        assert!(cache.insert(b"k1", vec![1, 2, 3]));
        assert!(cache.insert(b"k2", vec![4]));
        assert_eq!(cache.get(b"k1").as_deref(), Some(&[1u8, 2, 3][..]));
        // k2 unread for longer than KEEP: swept; k1 as old, but read
        // since (which renews it): kept.
        let month = KEEP + Duration::from_secs(60);
        set_age(&cache.path(b"k2"), month);
        set_age(&cache.path(b"k1"), month);
        assert!(cache.get(b"k1").is_some());
        // Another engine's folder, not swept for KEEP: deleted; one swept
        // lately: kept.
        let gone = FunctionCache::new(&root.join("functions-old"));
        let kept = FunctionCache::new(&root.join("functions-recent"));
        for other in [&gone, &kept] {
            other.sweep();
            assert!(other.insert(b"k", vec![1]));
        }
        set_age(&gone.dir.join("swept"), month);
        // A temporary file a killed child left a day ago: deleted.
        let left = cache.path(b"k1").with_extension("tmp1-0");
        std::fs::write(&left, b"half").unwrap();
        set_age(&left, RENEW);
        set_age(&dir.join("swept"), RENEW);
        cache.sweep();
        assert!(cache.get(b"k2").is_none());
        assert!(cache.get(b"k1").is_some());
        assert!(!left.exists());
        assert!(!gone.dir.exists());
        assert!(kept.get(b"k").is_some());
        let _ = std::fs::remove_dir_all(&root);
    }
}
