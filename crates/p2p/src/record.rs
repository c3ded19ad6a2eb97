//! Dictionary records: `key -> {subkey -> (value, expiration)}`.
//!
//! Each entry is written by the peer named by its subkey and signed by that
//! peer over `(key, subkey, value, expiration)` with the domain-separated
//! signing of SPEC §2 (purpose `dht-record`). Two dictionaries merge per
//! subkey: the entry with the strictly later expiration wins, so merging is
//! commutative, associative and idempotent, and replicas converge whatever
//! order they hear writes in. Expirations are Unix times in milliseconds.

use std::collections::BTreeMap;

use hypertensor_primitives::{H256, Keypair, Signature};
use libp2p::PeerId;

use crate::codec::{Reader, Writer};
use crate::{P2pError, Result};

/// Signing purpose of record entries (SPEC §2 domain separation).
pub const RECORD_PURPOSE: &str = "dht-record";
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Most entries one dictionary may carry on the wire.
pub const MAX_ENTRIES: usize = 1024;
/// Largest single value accepted on the wire before schema checks.
pub const MAX_WIRE_VALUE: usize = 1 << 20;
/// Version byte of the dictionary wire encoding.
const DICT_VERSION: u8 = 1;

/// Milliseconds since the Unix epoch, by the local clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Checks that `key` is a usable record key (non-empty, at most
/// [`MAX_KEY_LEN`] bytes).
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(P2pError::InvalidKey {
            key: key.chars().take(64).collect(),
            reason: "keys must be 1 to 256 bytes",
        });
    }
    Ok(())
}

/// One signed entry of a dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedEntry {
    /// The writer, which is also the subkey.
    pub subkey: PeerId,
    /// The value bytes (their type is given by the key's schema).
    pub value: Vec<u8>,
    /// Unix time in milliseconds after which the entry is dropped.
    pub expiration: u64,
    /// The writer's signature over `(key, subkey, value, expiration)`.
    pub signature: [u8; 64],
}

/// The bytes an entry's signature covers (before domain separation).
pub fn entry_payload(key: &str, subkey: &PeerId, value: &[u8], expiration: u64) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(key.as_bytes())
        .bytes(&subkey.to_bytes())
        .bytes(value)
        .u64(expiration);
    w.0
}

impl SignedEntry {
    /// Signs a new entry for `key` as the writer `keypair` (subkey = its peer
    /// id) on the network of `genesis`.
    pub fn sign(
        keypair: &Keypair,
        genesis: &H256,
        key: &str,
        value: Vec<u8>,
        expiration: u64,
    ) -> SignedEntry {
        let subkey = peer_id_of(keypair);
        let payload = entry_payload(key, &subkey, &value, expiration);
        let signature = keypair.sign_domain(RECORD_PURPOSE, genesis, &payload).0;
        SignedEntry {
            subkey,
            value,
            expiration,
            signature,
        }
    }

    /// Verifies that the subkey's own key signed this entry under `key`.
    /// A subkey that is not an Ed25519 peer id cannot own an entry.
    pub fn verify(&self, genesis: &H256, key: &str) -> std::result::Result<(), SignatureFault> {
        let public = hypertensor_primitives::PeerId::from_bytes(&self.subkey.to_bytes())
            .ok()
            .and_then(|p| p.ed25519_public_key())
            .ok_or(SignatureFault::NotOwnable)?;
        let payload = entry_payload(key, &self.subkey, &self.value, self.expiration);
        public
            .verify_domain(
                RECORD_PURPOSE,
                genesis,
                &payload,
                &Signature(self.signature),
            )
            .map_err(|_| SignatureFault::BadSignature)
    }
}

/// Why an entry's signature check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureFault {
    /// The subkey is not an Ed25519 peer id, so nobody can sign for it.
    NotOwnable,
    /// The signature does not verify under the subkey's key: forged, or
    /// signed by someone else than the subkey's owner.
    BadSignature,
}

/// The libp2p peer id of a primitives keypair.
pub fn peer_id_of(keypair: &Keypair) -> PeerId {
    // The primitives peer id is the same multihash libp2p uses.
    PeerId::from_bytes(keypair.peer_id().as_bytes())
        .expect("invariant: an Ed25519 identity multihash is a valid libp2p peer id")
}

/// A merged dictionary: at most one entry per subkey.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dictionary {
    entries: BTreeMap<PeerId, SignedEntry>,
}

impl Dictionary {
    /// An empty dictionary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one entry: it replaces the current entry of its subkey only if
    /// its expiration is strictly later. Returns whether it changed anything.
    pub fn merge_entry(&mut self, entry: SignedEntry) -> bool {
        match self.entries.get(&entry.subkey) {
            Some(current) if current.expiration >= entry.expiration => false,
            _ => {
                self.entries.insert(entry.subkey, entry);
                true
            }
        }
    }

    /// Merges every entry of `other`; returns how many changed this one.
    pub fn merge(&mut self, other: Dictionary) -> usize {
        other
            .entries
            .into_values()
            .filter(|e| self.merge_entry(e.clone()))
            .count()
    }

    /// Whether `entry` would change this dictionary if merged.
    pub fn would_change(&self, entry: &SignedEntry) -> bool {
        self.entries
            .get(&entry.subkey)
            .is_none_or(|current| current.expiration < entry.expiration)
    }

    /// Drops entries whose expiration is at or before `now_ms`; returns how
    /// many were dropped.
    pub fn evict_expired(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expiration > now_ms);
        before - self.entries.len()
    }

    /// The entry of `subkey`, if any.
    pub fn get(&self, subkey: &PeerId) -> Option<&SignedEntry> {
        self.entries.get(subkey)
    }

    /// Entries in subkey order.
    pub fn entries(&self) -> impl Iterator<Item = &SignedEntry> {
        self.entries.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The latest expiration of any entry (0 when empty).
    pub fn latest_expiration(&self) -> u64 {
        self.entries
            .values()
            .map(|e| e.expiration)
            .max()
            .unwrap_or(0)
    }

    /// The wire encoding: version, count, then each entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(DICT_VERSION)
            .u32(u32::try_from(self.entries.len()).unwrap_or(u32::MAX));
        for e in self.entries.values() {
            w.bytes(&e.subkey.to_bytes())
                .bytes(&e.value)
                .u64(e.expiration)
                .raw(&e.signature);
        }
        w.0
    }

    /// Decodes the wire encoding, bounded by the input and by
    /// [`MAX_ENTRIES`]. Entries are merged as they are read, so duplicate
    /// subkeys collapse by the merge rule. Signatures are not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Dictionary> {
        let mut r = Reader::new(bytes, "dictionary record");
        let version = r.u8()?;
        if version != DICT_VERSION {
            return Err(P2pError::Malformed {
                what: "dictionary record",
                reason: format!("unknown version {version}"),
            });
        }
        let count = r.u32()? as usize;
        if count > MAX_ENTRIES {
            return Err(P2pError::Malformed {
                what: "dictionary record",
                reason: format!("{count} entries exceed the limit of {MAX_ENTRIES}"),
            });
        }
        let mut dict = Dictionary::new();
        for _ in 0..count {
            let subkey = r.peer_id()?;
            let value = r.bytes(MAX_WIRE_VALUE)?.to_vec();
            let expiration = r.u64()?;
            let signature = r.array::<64>()?;
            dict.merge_entry(SignedEntry {
                subkey,
                value,
                expiration,
                signature,
            });
        }
        r.finish()?;
        Ok(dict)
    }
}

impl FromIterator<SignedEntry> for Dictionary {
    fn from_iter<I: IntoIterator<Item = SignedEntry>>(iter: I) -> Self {
        let mut d = Dictionary::new();
        for e in iter {
            d.merge_entry(e);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: &[u8], expiration: u64) -> SignedEntry {
        SignedEntry::sign(
            &Keypair::dev(name),
            &H256::ZERO,
            "k",
            value.to_vec(),
            expiration,
        )
    }

    #[test]
    fn later_expiration_wins_per_subkey_in_any_order() {
        let a1 = entry("alice", b"old", 100);
        let a2 = entry("alice", b"new", 200);
        let b = entry("bob", b"b", 50);
        let mut x = Dictionary::new();
        assert!(x.merge_entry(a1.clone()));
        assert!(x.merge_entry(a2.clone()));
        assert!(
            !x.merge_entry(a1.clone()),
            "older entry must not replace newer"
        );
        x.merge_entry(b.clone());
        let y: Dictionary = [b, a2.clone(), a1].into_iter().collect();
        assert_eq!(x, y);
        assert_eq!(x.get(&a2.subkey).unwrap().value, b"new");
        // Equal expiration: first one stays (strictly later wins).
        let a3 = entry("alice", b"other", 200);
        assert!(!x.merge_entry(a3));
        assert_eq!(x.get(&a2.subkey).unwrap().value, b"new");
    }

    #[test]
    fn eviction_drops_expired() {
        let mut d: Dictionary = [entry("alice", b"a", 100), entry("bob", b"b", 300)]
            .into_iter()
            .collect();
        assert_eq!(d.evict_expired(100), 1);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn encoding_round_trips_and_signatures_verify() {
        let d: Dictionary = [entry("alice", b"a", 100), entry("bob", b"bb", 300)]
            .into_iter()
            .collect();
        let back = Dictionary::decode(&d.encode()).unwrap();
        assert_eq!(back, d);
        for e in back.entries() {
            e.verify(&H256::ZERO, "k").unwrap();
            assert_eq!(
                e.verify(&H256::ZERO, "other"),
                Err(SignatureFault::BadSignature)
            );
            assert_eq!(
                e.verify(&H256([1; 32]), "k"),
                Err(SignatureFault::BadSignature),
                "another network's signature must not verify"
            );
        }
        let mut bytes = d.encode();
        bytes.push(0);
        assert!(Dictionary::decode(&bytes).is_err());
        assert!(Dictionary::decode(&bytes[..10]).is_err());
    }
}
