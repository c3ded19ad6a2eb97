//! The canonical binary encoding of signed and hashed data.
//!
//! One encoding, one byte string per value, so that every node computes the
//! same signing payloads, extrinsic hashes and state root:
//!
//! | type | encoding |
//! |---|---|
//! | `u8`..`u128` | little-endian, fixed width |
//! | `bool` | one byte, 0 or 1 |
//! | `[u8; N]`, [`H256`], [`AccountId`], [`Signature`] | the raw bytes |
//! | `Vec<T>`, `[T]`, `String`, `str`, [`PeerId`] | `u32` length (items or bytes), then the items |
//! | `Option<T>` | 0, or 1 followed by the value |
//! | `(A, B)`, `(A, B, C)` | the fields in order |
//! | `BTreeMap<K, V>` | `u32` length, then `(key, value)` pairs in key order |
//! | [`Fixed`] | its raw `u128` |
//!
//! Structs and enums implement [`Encode`] by hand (fields in declaration
//! order; enums as a `u8` variant index then the fields), so the encoding is
//! visible in code review rather than derived from a library's conventions.
//! Lengths above `u32::MAX` cannot occur in the chain (every collection is
//! bounded far below), and are a bug if they do.

use std::collections::{BTreeMap, BTreeSet};

use crate::{AccountId, Fixed, H256, PeerId, Signature};

/// Canonical, deterministic binary encoding (see the module docs).
pub trait Encode {
    /// Appends the encoding of `self` to `out`.
    fn encode_to(&self, out: &mut Vec<u8>);

    /// The encoding of `self` as a new vector.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }
}

/// Appends a collection length as `u32`.
pub fn encode_len(len: usize, out: &mut Vec<u8>) {
    let len = u32::try_from(len).expect("collections of the chain hold fewer than 2^32 items");
    out.extend_from_slice(&len.to_le_bytes());
}

macro_rules! encode_int {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode_to(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
encode_int!(u8, u16, u32, u64, u128);

impl Encode for bool {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl<const N: usize> Encode for [u8; N] {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl Encode for str {
    fn encode_to(&self, out: &mut Vec<u8>) {
        encode_len(self.len(), out);
        out.extend_from_slice(self.as_bytes());
    }
}

impl Encode for String {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.as_str().encode_to(out);
    }
}

impl<T: Encode> Encode for [T] {
    fn encode_to(&self, out: &mut Vec<u8>) {
        encode_len(self.len(), out);
        for item in self {
            item.encode_to(out);
        }
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.as_slice().encode_to(out);
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode_to(out);
            }
        }
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode_to(&self, out: &mut Vec<u8>) {
        (**self).encode_to(out);
    }
}

impl<A: Encode, B: Encode> Encode for (A, B) {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.0.encode_to(out);
        self.1.encode_to(out);
    }
}

impl<A: Encode, B: Encode, C: Encode> Encode for (A, B, C) {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.0.encode_to(out);
        self.1.encode_to(out);
        self.2.encode_to(out);
    }
}

impl<K: Encode, V: Encode> Encode for BTreeMap<K, V> {
    fn encode_to(&self, out: &mut Vec<u8>) {
        encode_len(self.len(), out);
        for (k, v) in self {
            k.encode_to(out);
            v.encode_to(out);
        }
    }
}

impl<T: Encode> Encode for BTreeSet<T> {
    fn encode_to(&self, out: &mut Vec<u8>) {
        encode_len(self.len(), out);
        for item in self {
            item.encode_to(out);
        }
    }
}

impl Encode for H256 {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Encode for AccountId {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Encode for Signature {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Encode for PeerId {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.as_bytes().encode_to(out);
    }
}

impl Encode for Fixed {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.raw().encode_to(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_layouts() {
        assert_eq!(7u32.encode(), vec![7, 0, 0, 0]);
        assert_eq!(true.encode(), vec![1]);
        assert_eq!("ab".encode(), vec![2, 0, 0, 0, b'a', b'b']);
        assert_eq!(Some(1u8).encode(), vec![1, 1]);
        assert_eq!(None::<u8>.encode(), vec![0]);
        assert_eq!(vec![1u16, 2].encode(), vec![2, 0, 0, 0, 1, 0, 2, 0]);
        assert_eq!((1u8, 2u8).encode(), vec![1, 2]);
        let map: BTreeMap<u8, u8> = [(2, 20), (1, 10)].into_iter().collect();
        assert_eq!(map.encode(), vec![2, 0, 0, 0, 1, 10, 2, 20]);
        assert_eq!(Fixed::ONE.encode(), Fixed::ONE.raw().to_le_bytes().to_vec());
    }
}
