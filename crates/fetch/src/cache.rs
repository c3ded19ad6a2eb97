//! Where the per-user cache lives, and the files this crate keeps in it.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{FetchError, Result};

/// Environment variable naming the cache root directly.
pub const HOME_ENV: &str = "HYPERTENSOR_HOME";

/// The cache root from the process environment: `$HYPERTENSOR_HOME` if set,
/// else `$XDG_CACHE_HOME/hypertensor`, else `~/.cache/hypertensor`.
pub fn cache_root_from_env() -> Result<PathBuf> {
    cache_root_with(|name| std::env::var_os(name))
}

/// [`cache_root_from_env`] with the environment given as a lookup function,
/// so the rule can be tested without touching the process environment.
///
/// Empty values count as unset; a relative `XDG_CACHE_HOME` is ignored, as
/// the XDG base directory specification requires.
pub fn cache_root_with(lookup: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let non_empty = |name: &str| lookup(name).filter(|value| !value.is_empty());
    if let Some(home) = non_empty(HOME_ENV) {
        return Ok(PathBuf::from(home));
    }
    if let Some(xdg) = non_empty("XDG_CACHE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok(xdg.join("hypertensor"));
    }
    match non_empty("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("hypertensor")),
        None => Err(FetchError::NoCacheDir),
    }
}

/// Creates `dir` (and its parents) if needed, reporting failure as an
/// unwritable cache.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| FetchError::CacheNotWritable {
        dir: dir.to_path_buf(),
        source,
    })
}

/// A file being written under a unique hidden name next to its final path.
///
/// It is deleted when dropped unless [`persist`](Self::persist) moved it
/// into place, so an error or a panic leaves nothing behind; a crash leaves
/// at most this hidden `.part` file, which [`remove_stale_parts`] clears on
/// the next attempt.
#[derive(Debug)]
pub(crate) struct PartFile {
    path: PathBuf,
    file: Option<File>,
}

impl PartFile {
    /// Creates a new, empty part file in `dir` for the final name `name`.
    pub(crate) fn create(dir: &Path, name: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let unique = format!(
                ".{name}.{}-{nanos}-{}.part",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = dir.join(unique);
            match File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(FetchError::CacheNotWritable {
                        dir: dir.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }

    /// Where the part file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for writing and reading back.
    pub(crate) fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("invariant: the file is only taken by persist, which consumes self")
    }

    /// Flushes the data to disk and renames the file to `dest` (in the same
    /// directory), then flushes the directory so the rename survives a crash.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<()> {
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| FetchError::Io {
                action,
                path,
                source,
            }
        };
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(io_err("flush", &self.path))?;
        }
        fs::rename(&self.path, dest).map_err(io_err("move into place", dest))?;
        if let Some(dir) = dest.parent() {
            // Directory fsync is how POSIX makes a rename durable; some
            // platforms and filesystems refuse it, which is harmless.
            if let Ok(handle) = File::open(dir) {
                let _ = handle.sync_all();
            }
        }
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes part files for `name` in `dir` left by crashed processes.
///
/// Only call this while holding the artifact's [`CacheLock`]: every writer
/// holds it, so any part file found then belongs to a dead process. Only
/// names [`PartFile::create`] makes for `name` itself match, never those of
/// a file whose name merely starts with `name` (such as a model's chunk
/// `name.part00`, which has a lock of its own).
pub(crate) fn remove_stale_parts(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_part_of(&entry.file_name().to_string_lossy(), name) {
            tracing::debug!(path = %entry.path().display(), "removing stale part file");
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether `file_name` is a part file [`PartFile::create`] made for `name`:
/// `.<name>.<pid>-<nanos>-<counter>.part`.
fn is_part_of(file_name: &str, name: &str) -> bool {
    let Some(unique) = file_name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".part"))
    else {
        return false;
    };
    let fields: Vec<&str> = unique.split('-').collect();
    fields.len() == 3
        && fields
            .iter()
            .all(|field| !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()))
}

/// An exclusive lock on one artifact in the cache, so that two processes
/// fetching it at once do the work once. Released when dropped.
#[derive(Debug)]
pub(crate) struct CacheLock {
    /// `None` when the filesystem does not support locking.
    file: Option<File>,
}

impl CacheLock {
    /// Whether this lock is really held (false on filesystems without locks).
    pub(crate) fn is_held(&self) -> bool {
        self.file.is_some()
    }

    /// Takes the lock for the artifact file `name` in `dir`, calling
    /// `on_wait` once if another process holds it.
    pub(crate) fn acquire(dir: &Path, name: &str, on_wait: impl FnOnce()) -> Result<Self> {
        let path = dir.join(format!(".{name}.lock"));
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| FetchError::CacheNotWritable {
                dir: dir.to_path_buf(),
                source,
            })?;
        let locked = match file.try_lock() {
            Ok(()) => Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock()
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        };
        match locked {
            Ok(()) => Ok(Self { file: Some(file) }),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                tracing::debug!(path = %path.display(), "file locking unsupported; going on without it");
                Ok(Self { file: None })
            }
            Err(source) => Err(FetchError::Io {
                action: "lock",
                path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn root(vars: &[(&str, &str)]) -> Result<PathBuf> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        cache_root_with(|name| vars.get(name).cloned())
    }

    #[test]
    fn hypertensor_home_wins() {
        let got = root(&[
            ("HYPERTENSOR_HOME", "/srv/ht"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(got.unwrap(), PathBuf::from("/srv/ht"));
    }

    #[test]
    fn xdg_cache_home_comes_next() {
        let got = root(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/home/u")]);
        assert_eq!(got.unwrap(), PathBuf::from("/x/hypertensor"));
    }

    #[test]
    fn home_cache_is_the_fallback() {
        let got = root(&[("HOME", "/home/u")]);
        assert_eq!(got.unwrap(), PathBuf::from("/home/u/.cache/hypertensor"));
    }

    #[test]
    fn empty_values_and_relative_xdg_are_ignored() {
        let got = root(&[
            ("HYPERTENSOR_HOME", ""),
            ("XDG_CACHE_HOME", "relative/cache"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(got.unwrap(), PathBuf::from("/home/u/.cache/hypertensor"));
    }

    #[test]
    fn no_variables_is_a_clear_error() {
        let err = root(&[]).unwrap_err();
        assert!(matches!(err, FetchError::NoCacheDir));
        assert!(err.to_string().contains("HYPERTENSOR_HOME"));
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hypertensor-fetch-unit-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn dropped_part_file_is_removed_and_persisted_one_is_moved() {
        use std::io::Write;
        let dir = scratch_dir("part");
        let dropped = PartFile::create(&dir, "a.bin").unwrap();
        let dropped_path = dropped.path().to_path_buf();
        assert!(dropped_path.exists());
        drop(dropped);
        assert!(!dropped_path.exists());

        let mut kept = PartFile::create(&dir, "a.bin").unwrap();
        kept.file().write_all(b"payload").unwrap();
        let part_path = kept.path().to_path_buf();
        kept.persist(&dir.join("a.bin")).unwrap();
        assert!(!part_path.exists());
        assert_eq!(fs::read(dir.join("a.bin")).unwrap(), b"payload");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_parts_of_only_the_named_file_are_removed() {
        let dir = scratch_dir("stale");
        fs::write(dir.join(".a.bin.1-2-3.part"), b"x").unwrap();
        fs::write(dir.join(".b.bin.1-2-3.part"), b"x").unwrap();
        fs::write(dir.join("a.bin"), b"x").unwrap();
        // A chunk of a.bin and that chunk's own part file are not a.bin's.
        fs::write(dir.join("a.bin.part00"), b"x").unwrap();
        fs::write(dir.join(".a.bin.part00.1-2-3.part"), b"x").unwrap();
        remove_stale_parts(&dir, "a.bin");
        assert!(!dir.join(".a.bin.1-2-3.part").exists());
        assert!(dir.join(".b.bin.1-2-3.part").exists());
        assert!(dir.join("a.bin").exists());
        assert!(dir.join("a.bin.part00").exists());
        assert!(dir.join(".a.bin.part00.1-2-3.part").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn part_names_are_recognised_exactly() {
        let dir = scratch_dir("names");
        let made = PartFile::create(&dir, "m.gguf").unwrap();
        let made_name = made.path().file_name().unwrap().to_string_lossy();
        assert!(is_part_of(&made_name, "m.gguf"), "{made_name}");
        assert!(!is_part_of(&made_name, "m"), "{made_name}");
        assert!(!is_part_of(".m.gguf.part00.1-2-3.part", "m.gguf"));
        assert!(!is_part_of(".m.gguf.1-2.part", "m.gguf"));
        assert!(!is_part_of("m.gguf.1-2-3.part", "m.gguf"));
        drop(made);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_lock_waits_for_the_first() {
        let dir = scratch_dir("lock");
        let first = CacheLock::acquire(&dir, "a.bin", || panic!("nobody holds it yet")).unwrap();
        assert!(first.is_held());
        let (tx, rx) = std::sync::mpsc::channel();
        let dir2 = dir.clone();
        let waiter = std::thread::spawn(move || {
            let mut waited = false;
            let _second = CacheLock::acquire(&dir2, "a.bin", || waited = true).unwrap();
            tx.send(waited).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "second lock taken while first held");
        drop(first);
        assert!(rx.recv().unwrap(), "the waiter was told it had to wait");
        waiter.join().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
