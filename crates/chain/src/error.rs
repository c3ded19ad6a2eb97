//! The node's one error type.

use hypertensor_primitives::H256;
use hypertensor_runtime::BlockNumber;

/// Everything the chain node can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded database failed.
    #[error("database error: {0}")]
    Database(#[from] redb::Error),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The runtime refused something (genesis, a block).
    #[error(transparent)]
    Runtime(#[from] hypertensor_runtime::Error),
    /// The database belongs to another chain than the configured genesis.
    #[error(
        "the database at {path} holds the chain with genesis {stored}, not {configured}; \
         use another --base-path or the matching genesis"
    )]
    GenesisMismatch {
        /// Database path.
        path: String,
        /// Genesis hash in the database.
        stored: H256,
        /// Genesis hash of the configuration.
        configured: H256,
    },
    /// The stored state does not hash to the best block's state root: the
    /// database is corrupt or was edited. The node refuses to run on it.
    #[error(
        "stored state at height {height} has state root {computed}, but block {height} \
         commits to {header}: the database is corrupt, refusing to start"
    )]
    StateRootMismatch {
        /// Best height.
        height: BlockNumber,
        /// State root in the header.
        header: H256,
        /// Root of the loaded state.
        computed: H256,
    },
    /// The database file cannot be used: empty, foreign or damaged. Such a
    /// file is never taken for a fresh chain (one is created only where no
    /// file exists).
    #[error(
        "database file {path} {problem}; refusing to start (move the file away to start \
         a new chain, or restore it from a backup)"
    )]
    BadDatabase {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: DatabaseProblem,
    },
    /// A task of the node panicked: a bug, reported as such.
    #[error("{what} panicked: {reason}")]
    Panicked {
        /// Which task.
        what: String,
        /// The panic's message.
        reason: String,
    },
    /// A task of the node ended while the node was running (its sockets
    /// or its producer went away without an error of their own).
    #[error("{what} stopped unexpectedly")]
    Stopped {
        /// Which task.
        what: String,
    },
    /// Stored data could not be decoded or is inconsistent.
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Consensus stopped (its reason is in the message).
    #[error("consensus stopped: {0}")]
    Consensus(String),
}

/// What is wrong with a database file ([`Error::BadDatabase`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseProblem {
    /// The file has 0 bytes.
    #[error("is empty (0 bytes), not a chain database")]
    Empty,
    /// Not a redb file, or a redb file without the chain's tables.
    #[error("is not a Hypertensor chain database: {0}")]
    Foreign(String),
    /// Pages that do not read back (checksums, structure), or the storage
    /// engine panicked on them.
    #[error("is damaged: {0}")]
    Damaged(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Converts any redb error into [`Error::Database`].
pub(crate) fn db<E: Into<redb::Error>>(e: E) -> Error {
    Error::Database(e.into())
}

/// Result with the node's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
