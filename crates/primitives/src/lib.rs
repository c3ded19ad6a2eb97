//! Identifiers, units, fixed-point math, keys and encodings shared by every
//! Hypertensor crate (SPEC §2).
//!
//! # Bird's eye view
//!
//! * [`units`]: balances are `u128` base units, [`TENSOR`] = 10^18 of them;
//!   exact decimal parsing and formatting of amounts such as `"100"` or
//!   `"0.5"` (no floating point anywhere).
//! * [`fixed`]: fractions as `u128` scaled by 10^18 ([`Fixed`]), multiplied
//!   through a 256-bit intermediate ([`mul_div`]) so no product overflows
//!   silently. **Every operation rounds down**; an operation whose exact
//!   result does not fit returns `None` instead of wrapping or saturating.
//! * [`hash`]: 32-byte hashes ([`H256`]) and SHA-256, the one hash function
//!   of the chain.
//! * [`crypto`]: Ed25519 ([`Keypair`], [`AccountId`] = the 32-byte public key,
//!   [`Signature`]), domain-separated signing
//!   (`b"hypertensor/<purpose>/v1" || genesis_hash || payload`), and the
//!   deterministic development keys (`alice`, `bob`, ...).
//! * [`keyfile`]: libp2p's protobuf private-key encoding, so one key file is
//!   both a chain key and a libp2p identity.
//! * [`peer_id`]: libp2p peer ids (`12D3KooW...` for Ed25519 keys).
//! * [`codec`]: the canonical, deterministic binary encoding of everything
//!   that is signed or hashed.
//!
//! The crate is pure: no I/O, no clocks, no randomness. Key generation takes
//! its 32 secret bytes from the caller.

pub mod codec;
pub mod crypto;
mod error;
pub mod fixed;
pub mod hash;
pub mod keyfile;
pub mod peer_id;
pub mod units;
mod wide;

pub use codec::Encode;
pub use crypto::{AccountId, DEV_ACCOUNT_NAMES, Keypair, Signature, domain_message};
pub use error::{Error, Result};
pub use fixed::{Fixed, mul_div};
pub use hash::{H256, sha256};
pub use peer_id::PeerId;
pub use units::{Balance, TENSOR, format_tensor, parse_tensor};
