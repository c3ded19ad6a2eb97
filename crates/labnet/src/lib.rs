//! A staked Hypertensor network across the hosts of a network lab
//! ([`hypertensor_netlab`]): chain validators finalizing with simplex BFT,
//! the subnet's validators and hosters, and a gateway serving the
//! OpenAI-compatible API, each a `hypertensor` process in its own network
//! namespace, set up as an operator would (a genesis naming the chain
//! validators, the subnet and its nodes registered, staked and activated
//! by real transactions over the chain's RPC).
//!
//! It is what the multi-host scenarios and the chaos soak share: start
//! it, cut a host's link or kill a process, and read on chain what the
//! network did about it (epoch reports, totals, each validator's height).
//! Everything it asks of the chain or the API goes from the gateway's host,
//! as the lab's hosts cannot be reached from outside it.

mod network;
mod process;

pub use network::{Network, Options, chain_host, post_from};
pub use process::Process;

/// What went wrong setting up or driving a lab network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lab (namespaces, links) failed.
    #[error(transparent)]
    Lab(#[from] hypertensor_netlab::LabError),
    /// The devnet pieces (roster, registration, activation, reports)
    /// failed.
    #[error(transparent)]
    Node(Box<hypertensor_node::NodeError>),
    /// The chain's RPC failed.
    #[error("chain RPC: {0}")]
    Chain(#[from] hypertensor_chain_client::Error),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A process of the network misbehaved (did not start, did not say
    /// it was ready).
    #[error("{name}: {reason}")]
    Process {
        /// The host it runs on.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// Something did not happen in time, or a name is unknown.
    #[error("{0}")]
    Scenario(String),
}

impl From<hypertensor_node::NodeError> for Error {
    fn from(e: hypertensor_node::NodeError) -> Self {
        Error::Node(Box::new(e))
    }
}

/// What the lab network's operations return.
pub type Result<T> = std::result::Result<T, Error>;
