//! The crate's error type.

use hypertensor_primitives::H256;

/// Everything that can go wrong in the consensus logic. Every variant names
/// what was wrong, so a bad record from a peer is reported, not guessed at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A record's bytes ended before the named field was complete.
    #[error("record truncated while reading {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A record carried bytes after its last field.
    #[error("{count} trailing bytes after the record")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// A length or count field exceeded its bound.
    #[error("{field} is {value}, the limit is {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A field held a value that is not allowed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A reveal does not hash to the commit its writer published.
    #[error("reveal does not match the commit: expected {expected}, reveal hashes to {actual}")]
    CommitMismatch {
        /// The published commit.
        expected: H256,
        /// The hash of the revealed bytes under the writer's identity.
        actual: H256,
    },
    /// The same subnet node id appeared twice in one scoring input.
    #[error("node {0} appears twice in the scoring input")]
    DuplicateNode(u32),
    /// A proposal or attestation vector is malformed or disagrees.
    #[error("attestation refused: {0}")]
    Disagreement(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
