//! Ed25519 keys, account ids, signatures and domain-separated signing.
//!
//! # Domain separation (SPEC §2)
//!
//! Every signature of the system is over
//! `b"hypertensor/" || purpose || b"/v1" || genesis_hash || payload`
//! ([`domain_message`]), so a signature made for one purpose (an extrinsic,
//! a DHT record, an RPC request) or for one network (genesis hash) never
//! verifies for another. Verification is strict (`verify_strict`: no
//! small-order keys, canonical signatures).
//!
//! # Development keys
//!
//! `Keypair::dev(name)` uses the secret key `SHA-256(b"hypertensor/dev-key/v1"
//! || name)`, for the well-known names of [`DEV_ACCOUNT_NAMES`] (or any other
//! name). These keys are public knowledge: for tests and devnets only.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use crate::hash::{from_hex_fixed, to_hex_prefixed};
use crate::{Error, H256, PeerId, Result, sha256};

/// The well-known development account names, in order.
pub const DEV_ACCOUNT_NAMES: [&str; 8] = [
    "alice", "bob", "charlie", "dave", "eve", "ferdie", "grace", "heidi",
];

/// The prefix hashed with a name to derive a development secret key.
pub const DEV_KEY_DOMAIN: &[u8] = b"hypertensor/dev-key/v1";

/// The bytes actually signed for `purpose`:
/// `b"hypertensor/<purpose>/v1" || genesis_hash || payload`.
///
/// ```
/// use hypertensor_primitives::{domain_message, H256};
/// let m = domain_message("extrinsic", &H256::ZERO, b"p");
/// assert!(m.starts_with(b"hypertensor/extrinsic/v1"));
/// assert_eq!(m.len(), 24 + 32 + 1);
/// ```
pub fn domain_message(purpose: &str, genesis_hash: &H256, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + purpose.len() + 32 + payload.len());
    out.extend_from_slice(b"hypertensor/");
    out.extend_from_slice(purpose.as_bytes());
    out.extend_from_slice(b"/v1");
    out.extend_from_slice(&genesis_hash.0);
    out.extend_from_slice(payload);
    out
}

/// An account: the 32-byte Ed25519 public key. Written as `0x` + 64 hex
/// digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub [u8; 32]);

impl AccountId {
    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies `signature` over `message` with this public key (strict
    /// Ed25519 verification).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<()> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| Error::InvalidPublicKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &sig)
            .map_err(|_| Error::BadSignature)
    }

    /// Verifies a domain-separated signature (see [`domain_message`]).
    pub fn verify_domain(
        &self,
        purpose: &str,
        genesis_hash: &H256,
        payload: &[u8],
        signature: &Signature,
    ) -> Result<()> {
        self.verify(&domain_message(purpose, genesis_hash, payload), signature)
    }

    /// The libp2p peer id of this public key (`12D3KooW...`).
    pub fn to_peer_id(&self) -> PeerId {
        PeerId::from_ed25519(self)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex_prefixed(&self.0))
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

impl FromStr for AccountId {
    type Err = Error;
    fn from_str(s: &str) -> Result<AccountId> {
        from_hex_fixed(s, "account id").map(AccountId)
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<AccountId, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// A 64-byte Ed25519 signature, written as `0x` + 128 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Default for Signature {
    fn default() -> Self {
        Signature([0; 64])
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex_prefixed(&self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = Error;
    fn from_str(s: &str) -> Result<Signature> {
        from_hex_fixed(s, "signature").map(Signature)
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Signature, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// An Ed25519 keypair. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// The keypair of a 32-byte Ed25519 secret key (RFC 8032 seed). The
    /// caller provides the randomness (for example from the OS).
    pub fn from_secret(secret: [u8; 32]) -> Keypair {
        Keypair(SigningKey::from_bytes(&secret))
    }

    /// The keypair from 64 bytes `secret || public`, checking that the
    /// public half belongs to the secret.
    pub fn from_keypair_bytes(bytes: &[u8; 64]) -> Result<Keypair> {
        SigningKey::from_keypair_bytes(bytes)
            .map(Keypair)
            .map_err(|_| Error::KeyFileInvalidKeypair)
    }

    /// The deterministic development key of `name`:
    /// secret = `SHA-256(b"hypertensor/dev-key/v1" || name)`.
    pub fn dev(name: &str) -> Keypair {
        Keypair::from_secret(sha256(&[DEV_KEY_DOMAIN, name.as_bytes()]).0)
    }

    /// The 32 secret bytes (RFC 8032 seed).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// `secret || public`, 64 bytes.
    pub fn to_keypair_bytes(&self) -> [u8; 64] {
        self.0.to_keypair_bytes()
    }

    /// The account id (public key).
    pub fn account_id(&self) -> AccountId {
        AccountId(self.0.verifying_key().to_bytes())
    }

    /// The libp2p peer id of the public key.
    pub fn peer_id(&self) -> PeerId {
        self.account_id().to_peer_id()
    }

    /// Signs raw bytes. Prefer [`Keypair::sign_domain`] for anything that
    /// crosses the network.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }

    /// Signs `payload` for `purpose` on the network of `genesis_hash`.
    pub fn sign_domain(&self, purpose: &str, genesis_hash: &H256, payload: &[u8]) -> Signature {
        self.sign(&domain_message(purpose, genesis_hash, payload))
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.account_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_keys_are_deterministic_and_distinct() {
        let alice = Keypair::dev("alice");
        assert_eq!(alice.account_id(), Keypair::dev("alice").account_id());
        assert_ne!(alice.account_id(), Keypair::dev("bob").account_id());
        assert_eq!(
            alice.secret_bytes(),
            sha256(&[b"hypertensor/dev-key/v1", b"alice"]).0
        );
    }

    #[test]
    fn domain_signatures_bind_purpose_and_network() {
        let key = Keypair::dev("alice");
        let genesis = sha256(&[b"genesis"]);
        let sig = key.sign_domain("extrinsic", &genesis, b"payload");
        let who = key.account_id();
        assert_eq!(
            who.verify_domain("extrinsic", &genesis, b"payload", &sig),
            Ok(())
        );
        assert_eq!(
            who.verify_domain("dht-record", &genesis, b"payload", &sig),
            Err(Error::BadSignature)
        );
        assert_eq!(
            who.verify_domain("extrinsic", &H256::ZERO, b"payload", &sig),
            Err(Error::BadSignature)
        );
        assert_eq!(
            who.verify_domain("extrinsic", &genesis, b"payloaD", &sig),
            Err(Error::BadSignature)
        );
        let bob = Keypair::dev("bob").account_id();
        assert_eq!(
            bob.verify_domain("extrinsic", &genesis, b"payload", &sig),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn invalid_public_key_is_named() {
        // Find 32 bytes that do not decode to a curve point.
        let bytes = (0u8..=255)
            .map(|b| [b; 32])
            .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
            .unwrap();
        let bad = AccountId(bytes);
        assert_eq!(
            bad.verify(b"m", &Signature::default()),
            Err(Error::InvalidPublicKey)
        );
    }

    #[test]
    fn json_forms() {
        let who = Keypair::dev("bob").account_id();
        let json = serde_json::to_string(&who).unwrap();
        assert_eq!(json.len(), 2 + 2 + 64);
        assert_eq!(serde_json::from_str::<AccountId>(&json).unwrap(), who);
        let sig = Keypair::dev("bob").sign(b"x");
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
        assert!(serde_json::from_str::<AccountId>("\"0x1234\"").is_err());
        assert!(
            !format!("{:?}", Keypair::dev("bob"))
                .contains(&hex::encode(Keypair::dev("bob").secret_bytes()))
        );
    }
}
