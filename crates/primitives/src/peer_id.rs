//! libp2p peer ids.
//!
//! A peer id is a multihash of the protobuf-encoded public key: for keys
//! whose encoding is at most 42 bytes (Ed25519: 36 bytes) the *identity*
//! multihash (code 0x00) holds the encoding itself, otherwise SHA-256 (code
//! 0x12) of it. Written in base58btc, Ed25519 peer ids start with
//! `12D3KooW`. This module accepts both multihash forms, so any libp2p peer
//! id can be stored, and recovers the Ed25519 key from identity ones.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use crate::{AccountId, Error, Result};

/// Multihash code of the identity "hash".
const IDENTITY: u8 = 0x00;
/// Multihash code of SHA-256.
const SHA2_256: u8 = 0x12;
/// Largest public-key encoding libp2p inlines with the identity multihash.
const MAX_INLINE_KEY_LENGTH: usize = 42;
/// protobuf `PublicKey { Type = Ed25519 (1), Data = 32 bytes }` header.
pub(crate) const ED25519_PUBLIC_KEY_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];
/// Longest base58 string worth decoding (44 bytes encode to at most 61 chars).
const MAX_BASE58_LENGTH: usize = 128;

/// A libp2p peer id: the multihash bytes, shown in base58btc.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(Vec<u8>);

impl PeerId {
    /// The peer id of an Ed25519 public key (identity multihash of the
    /// protobuf-encoded key).
    pub fn from_ed25519(public: &AccountId) -> PeerId {
        let mut bytes = Vec::with_capacity(2 + 36);
        bytes.push(IDENTITY);
        bytes.push(36);
        bytes.extend_from_slice(&ED25519_PUBLIC_KEY_PREFIX);
        bytes.extend_from_slice(public.as_bytes());
        PeerId(bytes)
    }

    /// Parses multihash bytes, accepting the two forms libp2p produces.
    pub fn from_bytes(bytes: &[u8]) -> Result<PeerId> {
        let invalid = |why: &str| Error::InvalidPeerId(why.to_string());
        let [code, length, digest @ ..] = bytes else {
            return Err(invalid("too short for a multihash"));
        };
        if usize::from(*length) != digest.len() {
            return Err(invalid("multihash length does not match its content"));
        }
        match *code {
            IDENTITY if digest.len() <= MAX_INLINE_KEY_LENGTH => Ok(PeerId(bytes.to_vec())),
            IDENTITY => Err(invalid("identity multihash longer than 42 bytes")),
            SHA2_256 if digest.len() == 32 => Ok(PeerId(bytes.to_vec())),
            SHA2_256 => Err(invalid("sha2-256 multihash must hold 32 bytes")),
            _ => Err(invalid(
                "unsupported multihash code (expected identity or sha2-256)",
            )),
        }
    }

    /// The multihash bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The Ed25519 public key inside an identity peer id, if it is one.
    pub fn ed25519_public_key(&self) -> Option<AccountId> {
        let rest = self.0.strip_prefix(&[IDENTITY, 36])?;
        let key = rest.strip_prefix(&ED25519_PUBLIC_KEY_PREFIX)?;
        let key: [u8; 32] = key.try_into().ok()?;
        Some(AccountId(key))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(&self.0).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = Error;
    fn from_str(s: &str) -> Result<PeerId> {
        if s.len() > MAX_BASE58_LENGTH {
            return Err(Error::InvalidPeerId("string too long".to_string()));
        }
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|e| Error::InvalidPeerId(format!("not base58: {e}")))?;
        PeerId::from_bytes(&bytes)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<PeerId, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    #[test]
    fn ed25519_peer_ids_look_like_libp2p_ones() {
        let key = Keypair::dev("alice");
        let peer = key.peer_id();
        let text = peer.to_string();
        assert!(text.starts_with("12D3KooW"), "{text}");
        assert_eq!(text.parse::<PeerId>().unwrap(), peer);
        assert_eq!(peer.ed25519_public_key(), Some(key.account_id()));
    }

    #[test]
    fn rejects_malformed_peer_ids() {
        for bad in ["", "0OIl", "12D3KooW", &"1".repeat(200)] {
            assert!(
                matches!(bad.parse::<PeerId>(), Err(Error::InvalidPeerId(_))),
                "{bad}"
            );
        }
        assert!(PeerId::from_bytes(&[0x12, 3, 1, 2, 3]).is_err());
        assert!(PeerId::from_bytes(&[0x55, 1, 1]).is_err());
        assert!(PeerId::from_bytes(&[0x00, 2, 1]).is_err());
        let sha = PeerId::from_bytes(&[[0x12, 32].as_slice(), &[7; 32]].concat()).unwrap();
        assert!(sha.to_string().starts_with("Qm"));
        assert_eq!(sha.ed25519_public_key(), None);
    }
}
