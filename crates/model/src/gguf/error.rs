//! What can be wrong with a GGUF file, named precisely.

/// A GGUF file that is malformed, or declares more than the
/// [`GgufLimits`](super::GgufLimits) allow.
///
/// Every variant names the field, key or tensor at fault, so a user can tell
/// a truncated download from a crafted file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Reading failed for a reason other than the end of the file.
    #[error("reading {what}: {source}")]
    Io {
        /// The field being read.
        what: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file ends inside its header.
    #[error("truncated: the file ends inside {what} (byte {at})")]
    Truncated {
        /// The field being read.
        what: String,
        /// Offset of that field.
        at: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file (magic bytes {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    /// A GGUF version this reader does not implement.
    #[error("unsupported GGUF version {0} (versions 2 and 3 are supported)")]
    UnsupportedVersion(u32),
    /// A count or length above its configured limit.
    #[error("{what} is {value}, above the limit of {limit}")]
    OverLimit {
        /// The count or length.
        what: String,
        /// What the file declares.
        value: u64,
        /// The limit (see `GgufLimits`).
        limit: u64,
    },
    /// A declared length that cannot fit in what is left of the header.
    #[error(
        "{what} needs at least {needed} bytes, but only {remaining} remain in the file \
         (or before the header limit)"
    )]
    DoesNotFit {
        /// The count or length.
        what: String,
        /// Bytes it needs at minimum.
        needed: u64,
        /// Bytes left.
        remaining: u64,
    },
    /// A metadata value type outside the GGUF specification.
    #[error("metadata key `{key}`: unknown value type {value_type}")]
    UnknownValueType {
        /// The metadata key.
        key: String,
        /// The type id found.
        value_type: u32,
    },
    /// A boolean stored as something other than 0 or 1.
    #[error("metadata key `{key}`: boolean byte {byte} is neither 0 nor 1")]
    InvalidBool {
        /// The metadata key.
        key: String,
        /// The byte found.
        byte: u8,
    },
    /// Arrays nested deeper than any model needs.
    #[error("metadata key `{key}`: arrays nested more than {limit} deep")]
    NestedTooDeep {
        /// The metadata key.
        key: String,
        /// The nesting limit.
        limit: usize,
    },
    /// The same metadata key twice.
    #[error("metadata key `{0}` appears twice")]
    DuplicateKey(String),
    /// The same tensor name twice.
    #[error("tensor `{0}` appears twice")]
    DuplicateTensor(String),
    /// `general.alignment` is unusable.
    #[error("metadata key `general.alignment`: {0}")]
    Alignment(String),
    /// A tensor's type, dims or offset is impossible.
    #[error("tensor `{name}`: {problem}")]
    Tensor {
        /// The tensor name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A tensor extends past the end of the file.
    #[error("truncated: tensor `{name}` ends at byte {end} but the file has {file_len} bytes")]
    TensorPastEnd {
        /// The tensor name.
        name: String,
        /// One past its last byte.
        end: u64,
        /// The file's length.
        file_len: u64,
    },
    /// Two tensors claim the same bytes.
    #[error("tensors `{first}` and `{second}` overlap in the file")]
    TensorsOverlap {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },
    /// Reading a tensor's data failed.
    #[error("reading tensor `{name}`: {reason}")]
    ReadTensor {
        /// The tensor name.
        name: String,
        /// What went wrong.
        reason: String,
    },
}
