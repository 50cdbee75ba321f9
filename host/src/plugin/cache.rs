//! Compiled code: loading what the compiler child produced, and the on-disk
//! cache that keeps it, so a restart or a swap back to a known version does
//! not compile again (components from Python or JS runtimes take seconds to
//! compile).
//!
//! Compiled code is native code the host will run, and wasmtime cannot
//! check it is what it claims to be; it can only check that it was compiled
//! for a compatible engine. So the host loads compiled code from two places
//! only: the output of its own compiler child (this same program, given the
//! component's bytes on its stdin), and cache files it wrote itself, in a
//! folder only its user can write, each named by the SHA-256 of the
//! component it was compiled from and a hash of the engine configuration. A
//! cache file that fails to load is deleted and the component compiled
//! again; one no load read for 30 days is deleted when a cache is opened. Beside the files, the compiler child keeps the functions it
//! compiled (`functions.rs`), native code under the same rule: written by
//! the child, in the folder only the host's user can write.
//!
//! The compiler child bounds what compiling costs; it is not a security
//! boundary. It runs as the host's user, without a seccomp filter, and the
//! host trusts its output as it would trust wasmtime compiling in-process:
//! a component that could exploit the compiler (Cranelift) could have the
//! host load native code of its choosing, in-process or not.

#![allow(
    unsafe_code,
    reason = "loading precompiled code is unsafe in wasmtime: see the module doc"
)]

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::functions::{KEEP, RENEW, age, renew};

/// The version of wasmtime the host is built with; part of every cache key.
const WASMTIME: &str = "48.0.8";

/// Loads code the host's compiler child produced.
pub(super) fn load_compiled(engine: &Engine, code: &[u8]) -> Result<Component, wasmtime::Error> {
    // SAFETY: see the module doc: `code` is what this program, run as the
    // compiler child, wrote for the component the host gave it; wasmtime
    // checks that it was compiled for this engine's configuration.
    unsafe { Component::deserialize(engine, code) }
}

/// Compiled components on disk.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    /// At most this many components' code kept (the newest), if set.
    keep: Option<usize>,
    /// The code of plugins this process runs, by content hash: their files
    /// are renewed while any [`Held`] of them lives ([`Self::renew_held`]),
    /// so the sweep of a later start never deletes the code of a plugin
    /// that ran all along.
    held: Arc<Mutex<HashMap<String, Weak<Held>>>>,
}

/// Keeps a cached file renewed while a loaded plugin holds it.
#[derive(Debug)]
pub struct Held;

/// Feeds `Hash` output into SHA-256, for a key that is stable across runs
/// (std's hashers are not).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// A cache in `dir`, created (0700) if needed, for components compiled
    /// by `engine`. An existing folder that another user owns, or that others
    /// may write to, is refused: whoever can write there could have the host
    /// run native code.
    pub fn new(dir: &Path, engine: &Engine) -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the plugin cache {}", dir.display()))?;
        }
        let meta = std::fs::metadata(dir)
            .with_context(|| format!("reading the plugin cache {}", dir.display()))?;
        let uid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(meta.uid());
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
            anyhow::bail!(
                "the plugin cache {} must be a folder of this user that no one else can write to (host.cache_dir; \"\" turns the cache off)",
                dir.display()
            );
        }
        let mut hasher = ShaHasher(Sha256::new());
        WASMTIME.hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = super::hex(&hasher.0.finalize()[..8]);
        let cache = CompileCache {
            dir: dir.to_owned(),
            engine_key,
            keep: None,
            held: Arc::default(),
        };
        cache.sweep();
        Ok(cache)
    }

    /// Marks the code of `content_hash` as run by this process: its file is
    /// renewed (by [`Self::renew_held`]) until the returned token, and every
    /// other of the same hash, is dropped.
    pub fn hold(&self, content_hash: &str) -> Arc<Held> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = held.get(content_hash).and_then(Weak::upgrade) {
            return token;
        }
        let token = Arc::new(Held);
        held.insert(content_hash.to_owned(), Arc::downgrade(&token));
        token
    }

    /// Renews the files of the code this process still runs, when a day
    /// old, and forgets the code it no longer runs. The host calls it at
    /// each maintenance round.
    pub fn renew_held(&self) {
        let live: Vec<String> = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.retain(|_, token| token.strong_count() > 0);
            held.keys().cloned().collect()
        };
        for content_hash in live {
            renew(&self.path(&content_hash));
        }
    }

    /// Deletes compiled components no load read for [`KEEP`] (of any
    /// engine: another wasmtime's or other settings' code is never read by
    /// this host) and temporary files a writer killed mid-write left for a
    /// day. Failures are ignored: the cache is an optimisation.
    fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(modified) = entry.metadata().ok().and_then(|m| m.modified().ok()) else {
                continue;
            };
            let old = name.ends_with(".cwasm") && age(modified) >= KEEP;
            let stale = name.contains(".tmp") && !entry.path().is_dir() && age(modified) >= RENEW;
            if old || stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// This cache, keeping the code of the newest `n` components only:
    /// Winch's code serves a version for seconds, and a version whose
    /// Cranelift code is cached never reads it again.
    pub fn keeping(mut self, n: usize) -> Self {
        self.keep = Some(n);
        self
    }

    /// The cache's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the compiler child keeps compiled functions for this engine
    /// (see `functions.rs`).
    pub fn functions_dir(&self) -> PathBuf {
        self.dir.join(format!("functions-{}", self.engine_key))
    }

    fn path(&self, content_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{content_hash}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for the component whose SHA-256 is
    /// `content_hash`, if the cache has it.
    pub fn get(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.path(content_hash);
        if !path.is_file() {
            return None;
        }
        // SAFETY: see the module doc: the file was written by this host
        // from a component with this content hash, in a folder only the
        // host's user can write, and wasmtime checks its compatibility.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => {
                // Read: kept for another [`KEEP`].
                renew(&path);
                Some(c)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Discarding an unusable cached plugin.");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Deletes the compiled code for the component whose SHA-256 is
    /// `content_hash`, if the cache has it.
    pub fn remove(&self, content_hash: &str) {
        let _ = std::fs::remove_file(self.path(content_hash));
    }

    /// Keeps compiled code for the component whose SHA-256 is
    /// `content_hash`. A failure is logged: the cache is an optimisation.
    pub fn put(&self, content_hash: &str, code: &[u8]) {
        let path = self.path(content_hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let result = std::fs::write(&tmp, code)
            .with_context(|| format!("writing {}", tmp.display()))
            .and_then(|()| {
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("renaming to {}", path.display()))
            });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "Could not cache a compiled plugin.");
        }
        if let Some(keep) = self.keep {
            self.trim(keep);
        }
    }

    /// Deletes this engine's code but for the newest `keep` files.
    fn trim(&self, keep: usize) {
        let suffix = format!("-{}.cwasm", self.engine_key);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, path) in files.into_iter().skip(keep) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::functions::set_age;
    use super::*;

    #[test]
    fn components_no_load_read_for_a_month_are_swept() {
        let dir = std::env::temp_dir().join(format!("switchyard-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let engine = Engine::default();
        // An empty component: the preamble of a component binary.
        let code = engine.precompile_component(b"\0asm\x0d\0\x01\0").unwrap();
        let cache = CompileCache::new(&dir, &engine).unwrap();
        for digest in ["read", "unread", "recent"] {
            cache.put(digest, &code);
        }
        let month = KEEP + Duration::from_secs(60);
        set_age(&cache.path("read"), month);
        set_age(&cache.path("unread"), month);
        // Read since: renewed.
        assert!(cache.get(&engine, "read").is_some());
        // Another engine's code, as old: swept; a temporary file a killed
        // writer left a day ago: swept; one being written: kept.
        let other = dir.join("0123-feedfacefeedface.cwasm");
        let left = cache.path("x").with_extension("tmp1");
        let writing = cache.path("y").with_extension("tmp2");
        for (path, age) in [(&other, month), (&left, RENEW), (&writing, Duration::ZERO)] {
            std::fs::write(path, b"code").unwrap();
            set_age(path, age);
        }
        let cache = CompileCache::new(&dir, &engine).unwrap();
        assert!(cache.get(&engine, "read").is_some());
        assert!(cache.get(&engine, "recent").is_some());
        assert!(!cache.path("unread").exists());
        assert!(!other.exists() && !left.exists());
        assert!(writing.exists());
        // Code a running host holds is renewed at its maintenance rounds,
        // however long ago it was read; code no longer held is not.
        let held = cache.hold("recent");
        drop(cache.hold("read"));
        set_age(&cache.path("recent"), month);
        set_age(&cache.path("read"), month);
        cache.renew_held();
        let young = |digest: &str| {
            let t = std::fs::metadata(cache.path(digest))
                .unwrap()
                .modified()
                .unwrap();
            age(t) < RENEW
        };
        assert!(young("recent") && !young("read"));
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
