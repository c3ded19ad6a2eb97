//! A Hypertensor subnet node wired together (SPEC §6-7): the only crate
//! that knows the chain, the P2P layer, the model and consensus at once.
//!
//! * [`NodeBuilder`]: the one composition root. Every command that runs a
//!   node (`hypertensor node` with or without a chain, `generate`/`chat
//!   --swarm`, each node of the devnet) builds it from [`NodeOptions`].
//! * [`TaskManager`]: a node's critical tasks (P2P event loop, head
//!   follower, block server, consensus loop, API); one stopping stops the
//!   node, naming it; shutdown is graceful within a deadline.
//! * [`HeadFollower`]: the node's one subscription to the chain's heads,
//!   moving the DHT's [`ChainClock`] and publishing each head on a
//!   `watch` channel the consensus loop reads.
//! * [`ChainStake`] and [`ChainClock`]: the chain's proof of stake and
//!   epoch, plugged into the DHT's record validators.
//! * [`ConsensusLoop`]: the executor of the per-epoch duties of hosters
//!   and validators: it runs the pure state machine of
//!   `hypertensor-duties` over the chain RPC, the DHT and the model.
//! * [`devnet`]: a chain, a subnet, hosters, validators and a gateway on
//!   one machine: what `hypertensor devnet` runs.
//! * [`NodeError`]: what all of it can fail with.

mod builder;
mod chain;
mod clock;
pub mod devnet;
mod dht;
mod epoch_loop;
mod error;
mod evidence;
mod heads;
mod overview;
mod reach;
mod running;
mod schemas;
mod stake;
mod tasks;
pub use hypertensor_duties::view;

pub use builder::{HostOptions, NodeBuilder, NodeOptions, SpanChoice};
pub use chain::ChainConnection;
pub use clock::{ChainClock, HEAD_SILENCE, PHASE_GRACE_BLOCKS};
pub use dht::LoopMetrics;
pub use epoch_loop::{
    ConsensusConfig, ConsensusLoop, DutiesWrapper, Hosting, LoopStatus, STATUS_EPOCHS,
};
pub use error::{NodeError, NodeResult};
pub use heads::HeadFollower;
pub use overview::{
    ChainOverview, ConsensusMetrics, OVERVIEW_EPOCHS, OVERVIEW_TIMEOUT, OVERVIEW_TTL,
    watch_settlements,
};
pub use reach::{
    REACH_CHECK, REACHABILITY_WAIT, RELAY_WAIT, Reach, keep_reachable, make_reachable,
};
pub use running::{RunningNode, SHUTDOWN_DEADLINE};
pub use schemas::with_consensus_schemas;
pub use stake::{ChainStake, chain_peer_id};
pub use tasks::{Shutdown, TaskExit, TaskFailure, TaskManager, TaskOutcome};
