//! The consensus records of the DHT, their canonical bytes, and commits.
//!
//! Encodings follow `hypertensor_primitives::codec` (integers little-endian,
//! `u32` counts); floats are their IEEE-754 bits, little-endian, and must be
//! finite. Decoding bounds every count, rejects trailing bytes and names the
//! field that was wrong.
//!
//! **Commits are bound to their writer and epoch.** A commit is
//! `SHA-256(salt16 ‖ epoch:u64 ‖ writer peer id (u32 length ‖ bytes) ‖ body)`.
//! A hoster that republishes another's commit under its own identity cannot
//! later produce a reveal that hashes to it (the preimage would have to name
//! the other writer), so a copied commit scores 0; and a commit of one epoch
//! cannot be replayed in another.

use hypertensor_primitives::codec::{Encode, encode_len};
use hypertensor_primitives::{H256, PeerId, sha256};

use crate::NodeId;
use crate::reader::Reader;
use crate::{Error, Result};

/// Numbers in one block's sketch.
pub const SKETCH_LEN: usize = 64;
/// Largest token count a challenge may ask for.
pub const MAX_CHALLENGE_TOKENS: u32 = 64;
/// Default token count of a challenge (SPEC §6).
pub const DEFAULT_CHALLENGE_TOKENS: u32 = 8;
/// Most blocks one hoster reveal may cover.
pub const MAX_REVEAL_BLOCKS: usize = 1024;
/// Most scores one validator reveal may carry.
pub const MAX_REVEAL_SCORES: usize = 4096;
/// Bytes of a commit record (a SHA-256 hash).
pub const COMMIT_LEN: usize = 32;

/// One block's 64-number sketch of its output on the challenge input.
pub type Sketch = [f32; SKETCH_LEN];
/// Random salt of a commit.
pub type Salt = [u8; 16];

/// `challenge/<e>`: the seed of the epoch's challenge input and its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The seed of the ChaCha20 streams (see [`crate::challenge`]).
    pub seed: [u8; 32],
    /// Tokens `T` of the challenge input, 1..=[`MAX_CHALLENGE_TOKENS`].
    pub tokens: u32,
}

impl Encode for Challenge {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.seed.encode_to(out);
        self.tokens.encode_to(out);
    }
}

impl Challenge {
    /// Decodes a challenge record (36 bytes).
    pub fn decode(bytes: &[u8]) -> Result<Challenge> {
        let mut r = Reader::new(bytes);
        let seed = r.take::<32>("challenge seed")?;
        let tokens = r.u32("challenge token count")?;
        r.finish()?;
        if tokens == 0 || tokens > MAX_CHALLENGE_TOKENS {
            return Err(Error::Invalid {
                field: "challenge token count",
                reason: format!("{tokens} is outside 1..={MAX_CHALLENGE_TOKENS}"),
            });
        }
        Ok(Challenge { seed, tokens })
    }
}

/// `hoster-reveal/<e>`: the salt, the served span and one sketch per block.
#[derive(Clone, Debug, PartialEq)]
pub struct HosterReveal {
    /// The salt of the commit.
    pub salt: Salt,
    /// The body that was committed.
    pub body: HosterRevealBody,
}

/// The committed part of a hoster reveal.
#[derive(Clone, Debug, PartialEq)]
pub struct HosterRevealBody {
    /// First served block.
    pub span_start: u32,
    /// One past the last served block.
    pub span_end: u32,
    /// The sketch of block `span_start + i` at index `i`.
    pub sketches: Vec<Sketch>,
}

impl HosterRevealBody {
    /// Number of blocks of the span.
    pub fn span_len(&self) -> u32 {
        self.span_end.saturating_sub(self.span_start)
    }
}

impl Encode for HosterRevealBody {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.span_start.encode_to(out);
        self.span_end.encode_to(out);
        encode_len(self.sketches.len(), out);
        for sketch in &self.sketches {
            for v in sketch {
                v.to_bits().encode_to(out);
            }
        }
    }
}

impl Encode for HosterReveal {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.salt.encode_to(out);
        self.body.encode_to(out);
    }
}

impl HosterReveal {
    /// Decodes a hoster reveal: salt, span, then exactly one finite sketch
    /// per block of a non-empty span.
    pub fn decode(bytes: &[u8]) -> Result<HosterReveal> {
        let mut r = Reader::new(bytes);
        let salt = r.take::<16>("hoster reveal salt")?;
        let span_start = r.u32("hoster reveal span start")?;
        let span_end = r.u32("hoster reveal span end")?;
        let n = r.count("hoster reveal sketch count", MAX_REVEAL_BLOCKS)?;
        if span_end <= span_start || (span_end - span_start) as usize != n {
            return Err(Error::Invalid {
                field: "hoster reveal span",
                reason: format!("span [{span_start}, {span_end}) with {n} sketches"),
            });
        }
        let mut sketches = Vec::with_capacity(n);
        for _ in 0..n {
            let mut sketch = [0f32; SKETCH_LEN];
            for v in &mut sketch {
                *v = r.f32("hoster reveal sketch value")?;
            }
            sketches.push(sketch);
        }
        r.finish()?;
        Ok(HosterReveal {
            salt,
            body: HosterRevealBody {
                span_start,
                span_end,
                sketches,
            },
        })
    }
}

/// `validator-reveal/<e>`: the salt and the validator's hoster scores of `e`.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatorReveal {
    /// The salt of the commit.
    pub salt: Salt,
    /// Scores by subnet node id, ids strictly increasing, values finite and
    /// non-negative.
    pub scores: Vec<(NodeId, f64)>,
}

/// Appends the committed encoding of validator scores.
fn encode_scores(scores: &[(NodeId, f64)], out: &mut Vec<u8>) {
    encode_len(scores.len(), out);
    for (id, s) in scores {
        id.encode_to(out);
        s.to_bits().encode_to(out);
    }
}

impl Encode for ValidatorReveal {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.salt.encode_to(out);
        encode_scores(&self.scores, out);
    }
}

impl ValidatorReveal {
    /// Decodes a validator reveal.
    pub fn decode(bytes: &[u8]) -> Result<ValidatorReveal> {
        let mut r = Reader::new(bytes);
        let salt = r.take::<16>("validator reveal salt")?;
        let n = r.count("validator reveal score count", MAX_REVEAL_SCORES)?;
        let mut scores: Vec<(NodeId, f64)> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u32("validator reveal node id")?;
            let s = r.f64("validator reveal score")?;
            if s < 0.0 {
                return Err(Error::Invalid {
                    field: "validator reveal score",
                    reason: format!("{s} is negative"),
                });
            }
            if let Some((prev, _)) = scores.last()
                && *prev >= id
            {
                return Err(Error::Invalid {
                    field: "validator reveal node id",
                    reason: format!("{id} after {prev}: ids must strictly increase"),
                });
            }
            scores.push((id, s));
        }
        r.finish()?;
        Ok(ValidatorReveal { salt, scores })
    }
}

impl HosterReveal {
    /// Builds the reveal of a hoster serving blocks `span_start..` with one
    /// sketch per block (see [`crate::challenge::SketchMatrix::sketch`]);
    /// refuses an empty, oversized or overflowing span and non-finite values.
    pub fn new(salt: Salt, span_start: u32, sketches: Vec<Sketch>) -> Result<HosterReveal> {
        let invalid = |reason: String| Error::Invalid {
            field: "hoster reveal",
            reason,
        };
        if sketches.is_empty() || sketches.len() > MAX_REVEAL_BLOCKS {
            return Err(invalid(format!(
                "{} sketches, expected 1..={MAX_REVEAL_BLOCKS}",
                sketches.len()
            )));
        }
        let span_end = span_start
            .checked_add(sketches.len() as u32)
            .ok_or_else(|| invalid(format!("span from {span_start} overflows")))?;
        if !sketches.iter().flatten().all(|v| v.is_finite()) {
            return Err(invalid("a sketch value is not finite".into()));
        }
        Ok(HosterReveal {
            salt,
            body: HosterRevealBody {
                span_start,
                span_end,
                sketches,
            },
        })
    }
}

impl ValidatorReveal {
    /// Builds a validator reveal from its hoster scores (sorted by the map);
    /// refuses more than [`MAX_REVEAL_SCORES`] entries and negative or
    /// non-finite scores.
    pub fn new(
        salt: Salt,
        scores: &std::collections::BTreeMap<NodeId, f64>,
    ) -> Result<ValidatorReveal> {
        if scores.len() > MAX_REVEAL_SCORES {
            return Err(Error::TooLarge {
                field: "validator reveal score count",
                value: scores.len() as u64,
                max: MAX_REVEAL_SCORES as u64,
            });
        }
        if let Some((node, s)) = scores.iter().find(|(_, s)| !(s.is_finite() && **s >= 0.0)) {
            return Err(Error::Invalid {
                field: "validator reveal score",
                reason: format!("node {node}: {s} is not a finite non-negative number"),
            });
        }
        Ok(ValidatorReveal {
            salt,
            scores: scores.iter().map(|(n, s)| (*n, *s)).collect(),
        })
    }
}

/// Picks the challenge of an epoch among the candidates found in the DHT
/// (`(writer node id, written by the elected validator, challenge)`): the
/// elected validator's record wins; without one, the fallback record of the
/// lowest node id, so every node picks the same one.
pub fn select_challenge(candidates: &[(NodeId, bool, Challenge)]) -> Option<&Challenge> {
    candidates
        .iter()
        .min_by_key(|(node, elected, _)| (!*elected, *node))
        .map(|(_, _, challenge)| challenge)
}

/// Decodes a commit record (exactly 32 bytes).
pub fn decode_commit(bytes: &[u8]) -> Result<H256> {
    let mut r = Reader::new(bytes);
    let hash = r.take::<COMMIT_LEN>("commit hash")?;
    r.finish()?;
    Ok(H256(hash))
}

fn commit_of(salt: &Salt, epoch: u64, writer: &PeerId, body: &[u8]) -> H256 {
    let mut header = Vec::with_capacity(16 + 8 + 4 + 38);
    salt.encode_to(&mut header);
    epoch.encode_to(&mut header);
    writer.encode_to(&mut header);
    sha256(&[&header, body])
}

fn check(expected: &H256, actual: H256) -> Result<()> {
    if *expected == actual {
        Ok(())
    } else {
        Err(Error::CommitMismatch {
            expected: *expected,
            actual,
        })
    }
}

impl HosterReveal {
    /// The commit `writer` publishes for this reveal in `epoch`.
    pub fn commit(&self, epoch: u64, writer: &PeerId) -> H256 {
        commit_of(&self.salt, epoch, writer, &self.body.encode())
    }

    /// Checks that this reveal, by `writer` in `epoch`, matches `commit`.
    pub fn verify(&self, commit: &H256, epoch: u64, writer: &PeerId) -> Result<()> {
        check(commit, self.commit(epoch, writer))
    }
}

impl ValidatorReveal {
    /// The commit `writer` publishes for these scores of `epoch`.
    pub fn commit(&self, epoch: u64, writer: &PeerId) -> H256 {
        let mut body = Vec::new();
        encode_scores(&self.scores, &mut body);
        commit_of(&self.salt, epoch, writer, &body)
    }

    /// Checks that this reveal, by `writer` for `epoch`, matches `commit`.
    pub fn verify(&self, commit: &H256, epoch: u64, writer: &PeerId) -> Result<()> {
        check(commit, self.commit(epoch, writer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypertensor_primitives::Keypair;

    fn peer(n: u8) -> PeerId {
        Keypair::from_secret([n; 32]).peer_id()
    }

    fn reveal() -> HosterReveal {
        let mut a = [0f32; SKETCH_LEN];
        a[0] = 1.5;
        let mut b = [0f32; SKETCH_LEN];
        b[63] = -2.0;
        HosterReveal {
            salt: [7; 16],
            body: HosterRevealBody {
                span_start: 3,
                span_end: 5,
                sketches: vec![a, b],
            },
        }
    }

    #[test]
    fn challenge_bytes_and_bounds() {
        let c = Challenge {
            seed: [1; 32],
            tokens: 8,
        };
        let bytes = c.encode();
        assert_eq!(bytes.len(), 36);
        assert_eq!(&bytes[32..], &[8, 0, 0, 0]);
        assert_eq!(Challenge::decode(&bytes).unwrap(), c);
        let zero = Challenge {
            seed: [1; 32],
            tokens: 0,
        }
        .encode();
        assert!(
            Challenge::decode(&zero)
                .unwrap_err()
                .to_string()
                .contains("token count")
        );
        assert!(matches!(
            Challenge::decode(&bytes[..35]),
            Err(Error::Truncated { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            Challenge::decode(&long),
            Err(Error::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn hoster_reveal_layout_and_round_trip() {
        let r = reveal();
        let bytes = r.encode();
        // salt 16 + span 8 + count 4 + 2 * 64 * 4
        assert_eq!(bytes.len(), 16 + 8 + 4 + 512);
        assert_eq!(&bytes[16..28], &[3, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&bytes[28..32], &1.5f32.to_bits().to_le_bytes());
        assert_eq!(HosterReveal::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn hoster_reveal_rejects_bad_input() {
        let mut bad_span = reveal();
        bad_span.body.span_end = 6;
        let err = HosterReveal::decode(&bad_span.encode()).unwrap_err();
        assert!(
            err.to_string().contains("span [3, 6) with 2 sketches"),
            "{err}"
        );
        let mut nan = reveal();
        nan.body.sketches[1][2] = f32::NAN;
        assert!(
            HosterReveal::decode(&nan.encode())
                .unwrap_err()
                .to_string()
                .contains("finite")
        );
        // A count above the bound is refused before anything is allocated.
        let mut huge = reveal().encode();
        huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            HosterReveal::decode(&huge),
            Err(Error::TooLarge { max: 1024, .. })
        ));
        assert!(matches!(
            HosterReveal::decode(&reveal().encode()[..100]),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn validator_reveal_round_trip_and_order() {
        let r = ValidatorReveal {
            salt: [2; 16],
            scores: vec![(1, 0.25), (4, 0.15)],
        };
        assert_eq!(ValidatorReveal::decode(&r.encode()).unwrap(), r);
        let unsorted = ValidatorReveal {
            salt: [2; 16],
            scores: vec![(4, 0.25), (1, 0.15)],
        };
        assert!(
            ValidatorReveal::decode(&unsorted.encode())
                .unwrap_err()
                .to_string()
                .contains("strictly increase")
        );
        let dup = ValidatorReveal {
            salt: [2; 16],
            scores: vec![(4, 0.25), (4, 0.15)],
        };
        assert!(ValidatorReveal::decode(&dup.encode()).is_err());
        let neg = ValidatorReveal {
            salt: [2; 16],
            scores: vec![(4, -0.5)],
        };
        assert!(
            ValidatorReveal::decode(&neg.encode())
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
    }

    #[test]
    fn commit_is_sha256_of_salt_epoch_writer_body() {
        let r = reveal();
        let writer = peer(1);
        let mut pre = Vec::new();
        pre.extend_from_slice(&r.salt);
        pre.extend_from_slice(&9u64.to_le_bytes());
        pre.extend_from_slice(&(writer.as_bytes().len() as u32).to_le_bytes());
        pre.extend_from_slice(writer.as_bytes());
        pre.extend_from_slice(&r.body.encode());
        assert_eq!(r.commit(9, &writer), sha256(&[&pre]));
        assert_eq!(
            decode_commit(r.commit(9, &writer).as_bytes()).unwrap(),
            r.commit(9, &writer)
        );
        assert!(decode_commit(&[0; 31]).is_err());
    }

    #[test]
    fn commits_bind_writer_epoch_salt_and_body() {
        let r = reveal();
        let (a, b) = (peer(1), peer(2));
        let c = r.commit(9, &a);
        r.verify(&c, 9, &a).unwrap();
        // Republished by b: b's reveal of the same bytes does not match.
        assert!(matches!(
            r.verify(&c, 9, &b),
            Err(Error::CommitMismatch { .. })
        ));
        assert!(r.verify(&c, 10, &a).is_err());
        let mut other_salt = r.clone();
        other_salt.salt[0] ^= 1;
        assert!(other_salt.verify(&c, 9, &a).is_err());
        let mut other_body = r.clone();
        other_body.body.sketches[0][5] = 1e-7;
        assert!(other_body.verify(&c, 9, &a).is_err());

        let v = ValidatorReveal {
            salt: [3; 16],
            scores: vec![(1, 0.4)],
        };
        let vc = v.commit(9, &a);
        v.verify(&vc, 9, &a).unwrap();
        assert!(v.verify(&vc, 9, &b).is_err());
        let changed = ValidatorReveal {
            salt: [3; 16],
            scores: vec![(1, 0.39)],
        };
        assert!(changed.verify(&vc, 9, &a).is_err());
    }

    #[test]
    fn constructors_check_their_input() {
        let r = HosterReveal::new([1; 16], 4, vec![[0.5; SKETCH_LEN]; 3]).unwrap();
        assert_eq!((r.body.span_start, r.body.span_end), (4, 7));
        assert_eq!(HosterReveal::decode(&r.encode()).unwrap(), r);
        assert!(HosterReveal::new([1; 16], 0, vec![]).is_err());
        assert!(HosterReveal::new([1; 16], u32::MAX, vec![[0.0; SKETCH_LEN]]).is_err());
        assert!(HosterReveal::new([1; 16], 0, vec![[f32::INFINITY; SKETCH_LEN]]).is_err());
        let scores = std::collections::BTreeMap::from([(9, 0.1), (2, 0.3)]);
        let v = ValidatorReveal::new([1; 16], &scores).unwrap();
        assert_eq!(v.scores, vec![(2, 0.3), (9, 0.1)]);
        let bad = std::collections::BTreeMap::from([(2, -0.3)]);
        assert!(
            ValidatorReveal::new([1; 16], &bad)
                .unwrap_err()
                .to_string()
                .contains("node 2")
        );
    }

    #[test]
    fn the_elected_validators_challenge_wins() {
        let c = |b: u8| Challenge {
            seed: [b; 32],
            tokens: 8,
        };
        let all = [(5, false, c(5)), (9, true, c(9)), (2, false, c(2))];
        assert_eq!(select_challenge(&all), Some(&c(9)));
        assert_eq!(select_challenge(&all[..1]), Some(&c(5)));
        let fallbacks = [(5, false, c(5)), (2, false, c(2))];
        assert_eq!(select_challenge(&fallbacks), Some(&c(2)));
        assert_eq!(select_challenge(&[]), None);
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic a decoder, and whatever decodes
        /// re-encodes to the same bytes (one encoding per value).
        #[test]
        fn decoders_are_total_and_canonical(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700)) {
            if let Ok(c) = Challenge::decode(&bytes) {
                proptest::prop_assert_eq!(c.encode(), bytes.clone());
            }
            if let Ok(r) = HosterReveal::decode(&bytes) {
                proptest::prop_assert_eq!(r.encode(), bytes.clone());
            }
            if let Ok(r) = ValidatorReveal::decode(&bytes) {
                proptest::prop_assert_eq!(r.encode(), bytes.clone());
            }
            let _ = decode_commit(&bytes);
        }

        /// Mutating any single byte of a valid validator reveal either fails
        /// to decode or fails the commit check.
        #[test]
        fn any_flipped_byte_breaks_the_commit(pos in 0usize..40, bit in 0u8..8) {
            let v = ValidatorReveal { salt: [3; 16], scores: vec![(1, 0.4), (2, 0.0)] };
            let writer = peer(1);
            let commit = v.commit(4, &writer);
            let mut bytes = v.encode();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            if let Ok(changed) = ValidatorReveal::decode(&bytes) {
                proptest::prop_assert!(changed.verify(&commit, 4, &writer).is_err());
            }
        }
    }
}
