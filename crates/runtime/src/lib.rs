//! The Hypertensor chain state machine (SPEC §3): a pure, deterministic
//! state transition function.
//!
//! # Bird's eye view
//!
//! ```text
//!  GenesisConfig::build() ──> State ──apply_block(&State, &Block)──> (State', events)
//!                               │
//!                               ├─ BlockBuilder: initialization, push(extrinsic)..., finish()
//!                               ├─ validate_extrinsic(): for a transaction pool
//!                               └─ read accessors: accounts, subnets, nodes, epoch info,
//!                                  elected validator, consensus data, totals, proof of stake
//! ```
//!
//! * No I/O, no clocks, no floating point, no randomness but the parent hash
//!   handed in with the block: every node computes the same state bit for
//!   bit. Collections are `BTreeMap`s; fractions are
//!   [`Fixed`](hypertensor_primitives::Fixed) and round down; what rounding
//!   leaves stays in the rewards vault.
//! * [`params`]: every number of SPEC §3.1. [`genesis`]: the JSON genesis
//!   file. [`call`]: the eleven calls. [`dispatch`](crate::dispatch) runs
//!   them (check everything, then mutate). [`epoch`]: settlement, EDA
//!   ([`eda`]), rewards, penalties, promotions, lapses, election
//!   ([`election`]). [`subsidy`]: the halving schedule. [`executive`]:
//!   blocks and extrinsic validity. [`block`]: extrinsics, headers, hashes.
//! * Invariant after every block: `total_issuance == Σ free + Σ stake + Σ
//!   unbonding + vault + treasury <= target_max_supply`
//!   ([`State::check_invariants`]).
//!
//! Hashes are SHA-256 throughout; the state root is SHA-256 over the
//! canonical encoding of the state (see [`State::state_root`]).
//!
//! ```
//! use hypertensor_primitives::{Keypair, TENSOR};
//! use hypertensor_runtime::{apply_block, BlockBuilder, Call, Extrinsic, GenesisConfig};
//!
//! let genesis = GenesisConfig::dev().build().unwrap();
//! let (alice, bob) = (Keypair::dev("alice"), Keypair::dev("bob"));
//! let xt = Extrinsic::sign(
//!     &alice,
//!     0,
//!     Call::Transfer { to: bob.account_id(), amount: 5 * TENSOR },
//!     &genesis.state.genesis_hash(),
//! );
//! let mut builder = BlockBuilder::new(&genesis.state, alice.account_id(), 1000).unwrap();
//! builder.push(xt).unwrap();
//! let built = builder.finish();
//! // Any node importing the block reaches the same state.
//! let (state, _events) = apply_block(&genesis.state, &built.block).unwrap();
//! assert_eq!(state.state_root(), built.block.header.state_root);
//! assert_eq!(state.account(&bob.account_id()).free, 1_000_005 * TENSOR);
//! state.check_invariants().unwrap();
//! ```

pub mod block;
pub mod call;
mod dispatch;
pub mod eda;
pub mod election;
pub mod epoch;
mod error;
pub mod event;
pub mod executive;
pub mod genesis;
pub mod params;
pub mod state;
pub mod subsidy;
pub mod types;

pub use block::{Block, EXTRINSIC_PURPOSE, Extrinsic, Header, extrinsics_root};
pub use call::Call;
pub use error::{Error, Result};
pub use event::{Event, EventRecord, PenaltyReason, Phase, RemovalReason};
pub use executive::{
    Applied, BlockBuilder, BuiltBlock, SignatureCheck, TxValidity, apply_block, apply_block_with,
};
pub use genesis::{
    ChainValidator, GenesisAccount, GenesisConfig, GenesisNode, GenesisSubnet,
    MAX_CHAIN_VALIDATORS, MAX_VALIDATOR_ADDRESS_LEN,
};
pub use params::Params;
pub use state::State;
pub use types::{
    Account, BlockNumber, Epoch, EpochConsensus, EpochInfo, NodeClass, NodeId, SettlementOutcome,
    Subnet, SubnetId, SubnetNode, SubnetState, Totals, UnbondingEntry,
};
