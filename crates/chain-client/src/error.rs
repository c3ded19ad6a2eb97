//! The client's error type.

use crate::api::RpcError;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL could not be connected to or the WebSocket handshake failed.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A node answered but refused the connection (HTTP 429 or 503 on the
    /// WebSocket upgrade: its connection caps are reached).
    #[error("the chain node at {url} refused the connection (HTTP {status}): {reason}")]
    Refused {
        /// The URL.
        url: String,
        /// The HTTP status of the refusal.
        status: u16,
        /// The node's reason.
        reason: String,
    },
    /// The connection closed (node stopped, network error) before the answer.
    #[error("connection to the chain node closed")]
    Closed,
    /// The node answered with a JSON-RPC error.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The node's answer did not have the expected shape.
    #[error("unexpected answer to {method}: {reason}")]
    BadResponse {
        /// The method called.
        method: String,
        /// What was wrong.
        reason: String,
    },
    /// Waiting for something took longer than allowed.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
}

/// Result with the client's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
