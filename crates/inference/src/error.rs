//! The inference crate's error type.

use hypertensor_model::ModelError;
use hypertensor_p2p::PeerId;

/// Everything that can go wrong serving or using remote spans.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The model engine failed (loading, shapes, context).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The P2P layer failed (dial, DHT, RPC).
    #[error(transparent)]
    P2p(#[from] hypertensor_p2p::P2pError),
    /// A peer sent bytes that do not follow the session protocol.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A server's cache budget cannot hold the reservation now. Not a
    /// fault: the server is busy.
    #[error("server {peer} is full: it can reserve {free_tokens} more tokens")]
    Full {
        /// The server.
        peer: PeerId,
        /// Positions it can still reserve.
        free_tokens: u64,
    },
    /// A server refused the request itself (the consensus challenge, a step
    /// beyond the reservation): the caller's doing, not the server's fault.
    #[error("server {peer} refused the request: {reason}")]
    Rejected {
        /// The server.
        peer: PeerId,
        /// Its reason.
        reason: String,
    },
    /// No route has room now for a sequence this long.
    #[error(
        "the swarm has room now for at most {available} tokens per sequence, and this one \
         needs {needed}; retry when sessions finish or ask for fewer tokens"
    )]
    InsufficientCapacity {
        /// Positions the sequence needs at least (prompt plus one).
        needed: usize,
        /// The most any route can reserve now.
        available: usize,
    },
    /// A server refused to open a session because it does not hold what it
    /// announced (another span or model).
    #[error("server {peer} refused the session: {reason}")]
    Refused {
        /// The server.
        peer: PeerId,
        /// Its reason.
        reason: String,
    },
    /// A server failed during a session (closed, timed out, or reported an
    /// error).
    #[error("server {peer} failed: {reason}")]
    ServerFailed {
        /// The server.
        peer: PeerId,
        /// What happened.
        reason: String,
    },
    /// A server answered a step with hidden states that cannot be right:
    /// the wrong number of values for the rows sent, or a value that is
    /// not finite (NaN or infinite). A fault: the server is banned and its
    /// blocks routed around, like a server that went away.
    #[error("server {peer} answered bad hidden states: {reason}")]
    BadHiddenStates {
        /// The server.
        peer: PeerId,
        /// What is wrong with them.
        reason: String,
    },
    /// No set of reachable, unbanned servers covers the blocks.
    #[error("no route covers blocks {from}..{to} of model `{model}`")]
    NoRoute {
        /// The model.
        model: String,
        /// First block that could not be reached.
        from: usize,
        /// One past the last block.
        to: usize,
    },
    /// Too many servers failed for one step.
    #[error("gave up after {attempts} failed servers: {last}")]
    GaveUp {
        /// Failures seen.
        attempts: usize,
        /// The last failure.
        last: String,
    },
}

/// Result alias for the inference crate.
pub type Result<T, E = InferenceError> = std::result::Result<T, E>;

impl From<InferenceError> for ModelError {
    /// How a swarm failure reaches the generation loop (and from there the
    /// API): the model's own errors as they are, the request refused by a
    /// server as the caller's bad input (400), and every other failure of
    /// the swarm (no route, no room, servers failing, the network) as
    /// [`ModelError::Unavailable`] carrying this error (503).
    fn from(e: InferenceError) -> Self {
        match e {
            InferenceError::Model(e) => e,
            InferenceError::Rejected { .. } => ModelError::InvalidInput(e.to_string()),
            other => ModelError::Unavailable(Box::new(other)),
        }
    }
}
