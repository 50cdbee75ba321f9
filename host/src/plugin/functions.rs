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
//! 256 folders, written whole (a temporary file renamed into place) by the
//! child that compiled the function. Entries not read for [`KEEP`] are
//! deleted, at most once a day: the cache holds what the plugins of the
//! last weeks use. The folder is inside the plugin cache, which only the
//! host's user may write (see `cache.rs`): an entry is native code.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// How long an entry no compile read is kept.
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often a read entry's time is renewed, and the folder swept.
const RENEW: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub struct FunctionCache {
    dir: PathBuf,
}

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

    /// Deletes the entries nobody read for [`KEEP`], if the last sweep is a
    /// day old or more. Failures are ignored: the cache is an optimisation.
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
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| age(t) >= KEEP);
                if old {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let path = self.path(key);
        let file = std::fs::File::open(&path).ok()?;
        if let Ok(modified) = file.metadata().and_then(|m| m.modified())
            && age(modified) >= RENEW
        {
            let _ = file.set_modified(SystemTime::now());
        }
        drop(file);
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
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
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
        let dir = std::env::temp_dir().join(format!("switchyard-functions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = FunctionCache::new(&dir);
        assert!(cache.get(b"k1").is_none());
        assert!(cache.insert(b"k1", vec![1, 2, 3]));
        assert!(cache.insert(b"k2", vec![4]));
        assert_eq!(cache.get(b"k1").as_deref(), Some(&[1u8, 2, 3][..]));
        // k2 unread for longer than KEEP: swept; k1 kept.
        let old = SystemTime::now() - KEEP - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(cache.path(b"k2"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.sweep();
        assert!(cache.get(b"k2").is_none());
        assert!(cache.get(b"k1").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
