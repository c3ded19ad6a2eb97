//! The replicated chain's glue: the runtime's blocks driven by
//! commonware's simplex BFT (ed25519 votes, marshal for ordered delivery
//! and backfill).
//!
//! * [`block`]: the runtime block as a commonware block (digest = header
//!   hash; decoding refuses extrinsics the header does not commit to).
//! * [`app`]: the application: the leader builds from the pool, every
//!   validator executes a proposal on its parent's state before voting.
//! * [`finalizer`]: finalized blocks reach the [`Host`] in order, each
//!   acknowledged only once committed.
//! * [`evidence`]: conflicting votes become verifiable records.
//! * [`engine`]: one validator wired on any commonware runtime and
//!   network.
//!
//! The state transition stays in `hypertensor-runtime`; nothing here
//! changes what a block means, only who agrees on it.

pub mod app;
pub mod block;
pub mod engine;
pub mod evidence;
pub mod finalizer;
pub mod follow;
pub mod keys;
pub mod process;

pub use app::{ChainApp, Executed, Host, Speculative, account_of};
pub use block::{BlockCodec, ChainBlock};
pub use engine::{
    Channels, StartError, Timing, Validator, ValidatorConfig, namespace, start_validator,
};
pub use evidence::{Evidence, EvidenceKind};
pub use follow::{CertificateError, FinalityVerifier};
pub use process::{ConsensusError, ConsensusThread, ProcessConfig};
