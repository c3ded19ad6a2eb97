//! The crate's error type.

/// Everything that can go wrong when parsing or verifying primitives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An amount or fraction string was empty.
    #[error("empty amount: expected a decimal number such as `100` or `0.5`")]
    AmountEmpty,
    /// An amount or fraction string was not a plain decimal number.
    #[error("invalid amount `{input}`: {reason}")]
    AmountMalformed {
        /// The rejected input.
        input: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// An amount had more fractional digits than base units can hold.
    #[error("amount `{input}` has more than {max} decimal places")]
    AmountTooPrecise {
        /// The rejected input.
        input: String,
        /// The number of decimal places a base unit allows.
        max: u32,
    },
    /// An amount does not fit in a `u128` of base units.
    #[error("amount `{input}` is too large")]
    AmountOverflow {
        /// The rejected input.
        input: String,
    },
    /// A hex string (hash, account id, signature) could not be decoded.
    #[error("invalid hex for {what}: {reason}")]
    InvalidHex {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Bytes had the wrong length for what they encode.
    #[error("{what} must be {expected} bytes, got {got}")]
    InvalidLength {
        /// What was being decoded.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// 32 bytes that are not a valid Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// A signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// A key file is not a protobuf-encoded libp2p private key.
    #[error("malformed key file: {0}")]
    KeyFileMalformed(&'static str),
    /// A key file holds a key type other than Ed25519.
    #[error("unsupported key type {0} in key file (only Ed25519 = 1 is supported)")]
    UnsupportedKeyType(u64),
    /// A key file's Ed25519 keypair bytes are inconsistent.
    #[error("key file holds an invalid Ed25519 keypair (public half does not match secret)")]
    KeyFileInvalidKeypair,
    /// A peer id string or byte string could not be decoded.
    #[error("invalid peer id: {0}")]
    InvalidPeerId(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
