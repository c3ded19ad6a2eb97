//! Validator election (SPEC §3.4).
//!
//! `seed = SHA-256(b"elect" || parent_hash || subnet_id as u32 LE || epoch as
//! u64 LE)`. The first 8 bytes of the seed, read as a little-endian `u64`,
//! give a candidate `x`; it is accepted if `x < n * floor(2^64 / n)` (so every
//! index is equally likely) and the index is `x mod n` into the validators
//! ordered by node id. Otherwise the next seed is `SHA-256(seed)` and the
//! draw repeats (rejection sampling; on average fewer than 2 draws).

use hypertensor_primitives::{H256, sha256};

use crate::types::{Epoch, SubnetId};

/// The election seed of a subnet's epoch.
pub fn election_seed(parent_hash: &H256, subnet: SubnetId, epoch: Epoch) -> H256 {
    sha256(&[
        b"elect",
        parent_hash.as_bytes(),
        &subnet.to_le_bytes(),
        &epoch.to_le_bytes(),
    ])
}

/// A uniformly distributed index in `0..n` drawn from `seed` by rejection
/// sampling; `None` if `n == 0`.
pub fn uniform_index(seed: H256, n: usize) -> Option<usize> {
    let n = u128::try_from(n).ok().filter(|n| *n > 0)?;
    // Accept x in [0, n * floor(2^64 / n)): each index has floor(2^64 / n)
    // preimages there.
    let limit = (1u128 << 64) / n * n;
    let mut seed = seed;
    loop {
        let mut first = [0u8; 8];
        first.copy_from_slice(&seed.0[..8]);
        let x = u128::from(u64::from_le_bytes(first));
        if x < limit {
            return usize::try_from(x % n).ok();
        }
        seed = sha256(&[seed.as_bytes()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_in_range_and_deterministic() {
        for n in 1..50 {
            let seed = election_seed(&H256::ZERO, 1, n as u64);
            let i = uniform_index(seed, n).unwrap();
            assert!(i < n);
            assert_eq!(uniform_index(seed, n), Some(i));
        }
        assert_eq!(uniform_index(H256::ZERO, 0), None);
    }

    #[test]
    fn rejection_redraws_above_the_limit() {
        // n = 3 * 2^62: limit = 3 * 2^62, so x = 2^64 - 1 must be rejected and
        // the index taken from SHA-256(seed).
        let n = 3usize << 62;
        let seed = H256([0xff; 32]);
        let next = sha256(&[seed.as_bytes()]);
        assert_eq!(uniform_index(seed, n), uniform_index(next, n));
    }

    #[test]
    fn indices_are_roughly_uniform() {
        let mut counts = [0u32; 5];
        for e in 0..5000u64 {
            counts[uniform_index(election_seed(&H256::ZERO, 7, e), 5).unwrap()] += 1;
        }
        // Expected 1000 each; 6 sigma is about 170.
        assert!(counts.iter().all(|c| (830..1170).contains(c)), "{counts:?}");
    }
}
