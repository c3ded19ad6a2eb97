//! Keys: a chain validator's account key is its consensus key.

use commonware_codec::DecodeExt as _;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_utils::ordered::Set;
use hypertensor_primitives::{AccountId, Keypair};
use hypertensor_runtime::ChainValidator;

/// A genesis validator whose account is not an ed25519 public key.
#[derive(Debug, thiserror::Error)]
#[error("validator {account} is not a valid ed25519 public key")]
pub struct BadValidatorKey {
    /// The account.
    pub account: AccountId,
}

/// The consensus signing key of an account keypair (the same key).
pub fn consensus_key(keypair: &Keypair) -> PrivateKey {
    // 32 bytes always decode as an ed25519 seed.
    PrivateKey::decode(bytes::Bytes::copy_from_slice(&keypair.secret_bytes()))
        .unwrap_or_else(|_| unreachable!())
}

/// The consensus public key of an account.
pub fn public_key(account: &AccountId) -> Result<PublicKey, BadValidatorKey> {
    PublicKey::decode(bytes::Bytes::copy_from_slice(&account.0))
        .map_err(|_| BadValidatorKey { account: *account })
}

/// The validator set as the engine orders it.
pub fn participants(validators: &[ChainValidator]) -> Result<Set<PublicKey>, BadValidatorKey> {
    let keys = validators
        .iter()
        .map(|v| public_key(&v.account))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Set::from_iter_dedup(keys))
}
