//! The Hypertensor chain node (SPEC §3.6): one block producer over the
//! pure runtime, a transaction pool, atomic storage in redb, and a
//! JSON-RPC 2.0 server over HTTP and WebSocket.
//!
//! # Bird's eye view
//!
//! ```text
//!   clients ── JSON-RPC (HTTP POST / and WebSocket GET /, one port) ──> rpc
//!                                                                      │ submit
//!                                                                      v
//!   producer (every block_time) ── Pool::build_block ──> BlockBuilder (runtime)
//!        │ Store::commit_block (block + events + state, one redb transaction)
//!        └─> best state (Arc) + new-head broadcast ──> subscribers
//! ```
//!
//! * [`store`]: redb tables; a block and its state commit atomically; on
//!   start the state root is recomputed and must match the best header.
//! * [`pool`]: admission with the runtime's `validate_extrinsic` and the
//!   pool's limits (per sender, future nonces, eviction when full),
//!   re-validation after each block, round-robin block building.
//! * [`node`]: configuration, the producer loop, start and shutdown.
//! * `rpc`: the server; method names, parameters and error codes are
//!   defined in [`hypertensor_chain_client::api`], which clients share.
//!
//! The state transition stays in `hypertensor-runtime` (`apply_block`,
//! `BlockBuilder`), so a replicated engine can replace the single producer
//! without touching it.

mod error;
mod follower;
pub mod node;
pub mod pool;
mod rpc;
pub mod store;

pub use error::{DatabaseProblem, Error, Result};
pub use hypertensor_chain_client as client;
pub use node::{ChainConfig, Node, RpcLimits};
pub use pool::{Checked, Pool, PoolConfig, PoolError, Revalidated};
pub use store::Store;
