//! The Hypertensor chain node (SPEC §3.6): a validator that finalizes
//! every block with the other genesis validators (simplex BFT, through
//! `hypertensor-bft`), or a full node that follows them; a transaction
//! pool, atomic storage of finalized blocks in redb, and a JSON-RPC 2.0
//! server over HTTP and WebSocket.
//!
//! # Bird's eye view
//!
//! ```text
//!   clients ── JSON-RPC (HTTP POST / and WebSocket GET /, one port) ──> rpc
//!                                                   │ submit: pool + gossip to the other validators
//!                                                   v
//!   consensus thread (hypertensor-bft: simplex, marshal, authenticated P2P)
//!        │ leader: Host::build (Pool::build_block on the parent's state)
//!        │ all:    execute the proposal before voting
//!        │ finalized, in order: Host::commit
//!        v
//!   Store::commit_block (block + events + state, one redb transaction)
//!        └─> finalized state (Arc) + new-head broadcast ──> subscribers
//! ```
//!
//! * [`store`]: redb tables; a block and its state commit atomically; on
//!   start the state root is recomputed and must match the best header.
//! * [`pool`]: admission with the runtime's `validate_extrinsic` and the
//!   pool's limits (per sender, future nonces, eviction when full),
//!   re-validation after each block, round-robin block building.
//! * [`node`]: configuration, the consensus host (build, commit,
//!   certificates, evidence, gossip), start and shutdown.
//! * `follower`: a full node's verified following of the validators.
//! * `rpc`: the server; method names, parameters and error codes are
//!   defined in [`hypertensor_chain_client::api`], which clients share.
//!
//! The state transition stays in `hypertensor-runtime` (`apply_block`,
//! `BlockBuilder`); consensus only decides which blocks are final.

mod error;
mod follower;
mod metrics;
pub mod node;
pub mod pool;
mod rpc;
pub mod store;

pub use error::{DatabaseProblem, Error, Result};
pub use hypertensor_chain_client as client;
pub use node::{ChainConfig, Node, RpcLimits};
pub use pool::{Checked, Pool, PoolConfig, PoolError, Revalidated};
pub use store::Store;
