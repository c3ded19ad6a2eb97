//! The crate's error type.

use crate::validate::RejectReason;

/// Everything that can go wrong in the P2P layer.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// A record entry failed a validator; nothing was stored.
    #[error("record rejected: {0}")]
    Rejected(RejectReason),
    /// Bytes from a peer or a file did not decode.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A key is not valid UTF-8 or too long.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key (lossy).
        key: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// The remote refused an RPC request with a reason.
    #[error("request refused by {peer}: {refusal}")]
    Refused {
        /// The server that refused.
        peer: libp2p::PeerId,
        /// Its reason.
        refusal: crate::rpc::Refusal,
    },
    /// A response did not verify against the server's peer id or request.
    #[error("invalid response from {peer}: {reason}")]
    InvalidResponse {
        /// The server.
        peer: libp2p::PeerId,
        /// What was wrong.
        reason: &'static str,
    },
    /// The RPC handler answered with an application error.
    #[error("remote handler error from {peer}: {message}")]
    Remote {
        /// The server.
        peer: libp2p::PeerId,
        /// The handler's message.
        message: String,
    },
    /// A network-level failure (dial, stream, query).
    #[error("network: {0}")]
    Network(String),
    /// A query did not complete in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The event loop has stopped; the handle is no longer usable.
    #[error("the p2p event loop has stopped")]
    Stopped,
    /// A multiaddress could not be listened on or parsed.
    #[error("address {addr}: {reason}")]
    Address {
        /// The address.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// An I/O error (key file, stream).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A key or encoding error from the primitives crate.
    #[error(transparent)]
    Primitives(#[from] hypertensor_primitives::Error),
}

/// The crate's result alias.
pub type Result<T> = std::result::Result<T, P2pError>;
