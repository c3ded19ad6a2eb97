//! Extrinsics, headers and blocks, with their hashes (SPEC §3.6).
//!
//! * An extrinsic is `(signer, nonce, call, signature)`; the signature is
//!   over [`domain_message`](hypertensor_primitives::domain_message) with
//!   purpose [`EXTRINSIC_PURPOSE`], the genesis hash, and the payload
//!   `encode(signer) || encode(nonce) || encode(call)`.
//! * Extrinsic hash: SHA-256 of its canonical encoding (signature included).
//! * Extrinsics root: SHA-256 of `b"hypertensor/extrinsics/v1"` followed by
//!   the encoded list of extrinsic hashes.
//! * Block hash: SHA-256 of the canonical encoding of the header.

use hypertensor_primitives::codec::Encode;
use hypertensor_primitives::{AccountId, H256, Keypair, Signature, sha256};
use serde::{Deserialize, Serialize};

use crate::call::Call;
use crate::types::BlockNumber;
use crate::{Error, Result};

/// Signing purpose of extrinsics: signed bytes start with
/// `b"hypertensor/extrinsic/v1"`.
pub const EXTRINSIC_PURPOSE: &str = "extrinsic";

/// A signed call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extrinsic {
    /// The signing account (pays the fee).
    pub signer: AccountId,
    /// Must equal the signer's account nonce when applied.
    pub nonce: u64,
    /// What to do.
    pub call: Call,
    /// Ed25519 signature (see the module docs).
    pub signature: Signature,
}

impl Extrinsic {
    /// Signs `call` with `key` for the network of `genesis_hash`.
    pub fn sign(key: &Keypair, nonce: u64, call: Call, genesis_hash: &H256) -> Extrinsic {
        let signer = key.account_id();
        let payload = signing_payload(&signer, nonce, &call);
        let signature = key.sign_domain(EXTRINSIC_PURPOSE, genesis_hash, &payload);
        Extrinsic {
            signer,
            nonce,
            call,
            signature,
        }
    }

    /// Checks the signature for the network of `genesis_hash`.
    pub fn verify_signature(&self, genesis_hash: &H256) -> Result<()> {
        let payload = signing_payload(&self.signer, self.nonce, &self.call);
        self.signer
            .verify_domain(EXTRINSIC_PURPOSE, genesis_hash, &payload, &self.signature)
            .map_err(|_| Error::BadSignature)
    }

    /// SHA-256 of the canonical encoding.
    pub fn hash(&self) -> H256 {
        sha256(&[&self.encode()])
    }
}

/// The bytes an extrinsic's signature covers (before domain separation).
pub fn signing_payload(signer: &AccountId, nonce: u64, call: &Call) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    signer.encode_to(&mut out);
    nonce.encode_to(&mut out);
    call.encode_to(&mut out);
    out
}

impl Encode for Extrinsic {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.signer.encode_to(out);
        self.nonce.encode_to(out);
        self.call.encode_to(out);
        self.signature.encode_to(out);
    }
}

/// The root committing to a block's extrinsics, in order.
pub fn extrinsics_root(extrinsics: &[Extrinsic]) -> H256 {
    let hashes: Vec<H256> = extrinsics.iter().map(Extrinsic::hash).collect();
    extrinsics_root_of_hashes(&hashes)
}

/// [`extrinsics_root`] from the extrinsics' hashes.
pub(crate) fn extrinsics_root_of_hashes(hashes: &[H256]) -> H256 {
    sha256(&[b"hypertensor/extrinsics/v1", &hashes.encode()])
}

/// A block header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Height; genesis is 0.
    pub height: BlockNumber,
    /// Hash of the previous header (zero for genesis).
    pub parent_hash: H256,
    /// State root after executing this block.
    pub state_root: H256,
    /// Root of the block's extrinsics.
    pub extrinsics_root: H256,
    /// Account paid the author share of subsidy and fees.
    pub author: AccountId,
    /// Milliseconds since the Unix epoch, as stated by the author (never
    /// before the parent's).
    pub timestamp_ms: u64,
}

impl Header {
    /// SHA-256 of the canonical encoding: the block hash.
    pub fn hash(&self) -> H256 {
        sha256(&[&self.encode()])
    }
}

impl Encode for Header {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.height.encode_to(out);
        self.parent_hash.encode_to(out);
        self.state_root.encode_to(out);
        self.extrinsics_root.encode_to(out);
        self.author.encode_to(out);
        self.timestamp_ms.encode_to(out);
    }
}

/// A header and its extrinsics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// Signed extrinsics, applied in order.
    pub extrinsics: Vec<Extrinsic>,
}

impl Block {
    /// The block hash (its header's hash).
    pub fn hash(&self) -> H256 {
        self.header.hash()
    }
}
