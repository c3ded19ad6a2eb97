//! The node crate's error type: everything starting and running a node,
//! or a devnet, can fail with.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::tasks::TaskFailure;

/// Why a node (or a devnet) could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The chain's RPC did not answer at start.
    #[error("cannot reach the chain at {url}")]
    ChainUnreachable {
        /// The URL tried.
        url: String,
        /// Why.
        #[source]
        source: hypertensor_chain_client::Error,
    },
    /// A chain RPC call failed.
    #[error(transparent)]
    Chain(#[from] hypertensor_chain_client::Error),
    /// The devnet's chain node failed to start.
    #[error("cannot start the chain")]
    ChainNode(#[from] hypertensor_chain::Error),
    /// The chain answered something a node cannot work with (a vanished
    /// subnet, a closed subscription, an unknown node).
    #[error("unexpected chain state: {0}")]
    ChainState(String),
    /// A transaction was included but failed.
    #[error("{what} failed: {reason}")]
    Transaction {
        /// What the transaction was for.
        what: String,
        /// The chain's reason.
        reason: String,
    },
    /// The P2P layer failed.
    #[error(transparent)]
    P2p(#[from] hypertensor_p2p::P2pError),
    /// The model file could not be opened or read.
    #[error("cannot open the model {path}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: hypertensor_model::ModelError,
    },
    /// Loading part of the model failed.
    #[error(transparent)]
    Model(#[from] hypertensor_model::ModelError),
    /// The block server or the swarm client failed to start.
    #[error(transparent)]
    Inference(#[from] hypertensor_inference::InferenceError),
    /// The blocks asked for are not in the model.
    #[error("blocks {start}..{end} do not fit the model's {n_blocks} blocks")]
    BlocksOutOfRange {
        /// First block asked for.
        start: usize,
        /// One past the last.
        end: usize,
        /// Blocks the model has.
        n_blocks: usize,
    },
    /// The API's address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The options contradict each other or the model.
    #[error("{0}")]
    InvalidConfig(String),
    /// Behind NAT, and no bootstrap peer would relay for this node.
    #[error(
        "peers cannot dial this node (it is behind NAT) and no bootstrap peer gave it a relay reservation; last: {0}"
    )]
    Unreachable(String),
    /// The consensus loop could not start.
    #[error("cannot start the consensus loop: {0}")]
    Consensus(String),
    /// One node of a devnet failed to start.
    #[error("cannot start {name}")]
    Start {
        /// The node's name.
        name: String,
        /// Why.
        #[source]
        source: Box<NodeError>,
    },
    /// A critical task of one devnet node stopped.
    #[error("devnet node {name} stopped")]
    NodeFailed {
        /// The node's name.
        name: String,
        /// Which task, and how.
        #[source]
        source: TaskFailure,
    },
    /// A critical task stopped (see [`crate::TaskManager`]).
    #[error(transparent)]
    Task(#[from] TaskFailure),
    /// A background task of the devnet panicked or was cancelled.
    #[error("the {what} task failed: {reason}")]
    Background {
        /// Which task.
        what: &'static str,
        /// How.
        reason: String,
    },
}

/// Result with the node crate's [`NodeError`].
pub type NodeResult<T, E = NodeError> = std::result::Result<T, E>;
