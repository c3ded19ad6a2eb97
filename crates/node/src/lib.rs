//! A Hypertensor subnet node wired together (SPEC §6-7): the only crate
//! that knows the chain, the P2P layer, the model and consensus at once.
//!
//! * [`ChainStake`] and [`ChainClock`]: the chain's proof of stake and
//!   epoch, plugged into the DHT's record validators.
//! * [`ConsensusLoop`]: the per-epoch duties of hosters and validators
//!   (challenge, commit, reveal, propose, attest), calling the pure
//!   functions of `hypertensor-consensus`.
//! * [`start_node`]: one node (hoster, validator or gateway) on the
//!   current runtime: what `hypertensor node` runs.
//! * [`devnet`]: a chain, a subnet, hosters, validators and a gateway on
//!   one machine: what `hypertensor devnet` runs.

mod chain;
mod clock;
pub mod devnet;
mod dht;
mod epoch_loop;
mod schemas;
mod stake;
pub use hypertensor_duties::view;
mod wiring;

pub use chain::ChainConnection;
pub use clock::{ChainClock, HEAD_SILENCE, PHASE_GRACE_BLOCKS};
pub use dht::LoopMetrics;
pub use epoch_loop::{
    Behaviour, ConsensusConfig, ConsensusLoop, Hosting, LoopStatus, STATUS_EPOCHS,
};
pub use schemas::with_consensus_schemas;
pub use stake::{ChainStake, chain_peer_id};
pub use wiring::{HostOptions, NodeOptions, RunningNode, start_node};
