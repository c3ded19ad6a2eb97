//! The pure, deterministic logic of subnet consensus (SPEC §6): inputs in,
//! results out. No async runtime, no file system, no network, no clocks: the
//! node's epoch loop reads the chain and the DHT, calls these functions, and
//! writes what they return. See `docs/consensus.md`.
//!
//! * [`phase`]: from the epoch length and a block height, the progress and
//!   which record may be written (integer arithmetic; what the DHT's phase
//!   validator asks).
//! * [`records`]: the DHT records (challenge, hoster and validator commits
//!   and reveals), their canonical bytes with bounded decoding, and commits
//!   bound to their writer so a copied commit can never be revealed.
//! * [`challenge`]: the challenge input `X_e` and the 64-number
//!   Johnson-Lindenstrauss sketch, both from ChaCha20 streams of the seed.
//! * [`scores`]: hoster scores (distance of each block's sketch to the
//!   IQR-filtered mean), validator scores (deviation from the IQR-filtered
//!   mean of revealed scores), the proposal vector and the attestation
//!   check.
//! * [`evidence`]: servers' signed step receipts and the evidence record
//!   that convicts a hoster of serving wrong outputs (it then scores 0).
//!
//! ```
//! use hypertensor_consensus::phase::{PhaseParams, Position, RecordKind, Writer};
//!
//! // Block 1234 with 100-block epochs: epoch 12, progress 0.34.
//! let now = Position::at(1234, 100)?;
//! let open = PhaseParams::default().open_records(now, Writer::Other);
//! assert_eq!(
//!     open,
//!     vec![(RecordKind::HosterCommit, 12), (RecordKind::Evidence, 12)]
//! );
//! # Ok::<(), hypertensor_consensus::Error>(())
//! ```
//!
//! Floating point appears only in the scores, computed in f64 in a fixed
//! order (inputs sorted by node id, blocks ascending), so every scorer with
//! the same records gets the same bits; the chain receives them as
//! `floor(score · 10^18)` and never computes in floating point itself.

pub mod challenge;
mod error;
pub mod evidence;
pub mod phase;
mod reader;
pub mod records;
pub mod scores;
mod stats;

pub use error::{Error, Result};

/// A subnet node's id on the chain (the runtime's `NodeId`).
pub type NodeId = u32;
