//! 32-byte hashes and SHA-256.
//!
//! SHA-256 is the chain's one hash function: block and extrinsic hashes,
//! the state root, the election seed and the development keys all use it
//! (SPEC §2 lets each purpose pick BLAKE3 or SHA-256; using one function
//! keeps the dependency tree lean and matches the commit hash of SPEC §6).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A 32-byte hash, written as `0x` followed by 64 lowercase hex digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct H256(pub [u8; 32]);

impl H256 {
    /// The all-zero hash (the parent of the genesis block).
    pub const ZERO: H256 = H256([0; 32]);

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// SHA-256 of the concatenation of `parts`.
///
/// ```
/// use hypertensor_primitives::sha256;
/// assert_eq!(sha256(&[b"ab", b"c"]), sha256(&[b"abc"]));
/// ```
pub fn sha256(parts: &[&[u8]]) -> H256 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    H256(hasher.finalize().into())
}

/// Formats bytes as `0x`-prefixed lowercase hex.
pub(crate) fn to_hex_prefixed(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Parses `N` bytes from hex, with or without a `0x` prefix. Errors say
/// what is wrong: an uppercase or other prefix, characters that are not
/// hex digits (named, with their position), or the number of digits.
pub(crate) fn from_hex_fixed<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N]> {
    let expected = format!("`0x` followed by {} hex digits ({N} bytes)", 2 * N);
    if let Some(rest) = s.strip_prefix("0X") {
        return Err(Error::InvalidHex {
            what,
            reason: format!(
                "the prefix must be a lowercase `0x`, got `0X` (write `0x{}`)",
                truncate(rest, 2 * N)
            ),
        });
    }
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if let Some((i, c)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        let offset = s.len() - digits.len() + i;
        return Err(Error::InvalidHex {
            what,
            reason: format!(
                "`{}` is not hex: character {c:?} at position {offset} is not a hex digit; \
                 expected {expected}",
                truncate(s, 80)
            ),
        });
    }
    if digits.len() != 2 * N {
        return Err(Error::InvalidHex {
            what,
            reason: format!("expected {expected}, got {} hex digits", digits.len()),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|e| Error::InvalidHex {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// At most `max` characters of `text`, for error messages.
fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

impl fmt::Display for H256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex_prefixed(&self.0))
    }
}

impl fmt::Debug for H256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "H256({self})")
    }
}

impl FromStr for H256 {
    type Err = Error;
    fn from_str(s: &str) -> Result<H256> {
        from_hex_fixed(s, "hash").map(H256)
    }
}

impl Serialize for H256 {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for H256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<H256, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256(&[b"abc"]).to_string(),
            "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let h = sha256(&[b"x"]);
        assert_eq!(h.to_string().parse::<H256>().unwrap(), h);
        assert_eq!(h.to_string()[2..].parse::<H256>().unwrap(), h);
        let short = "0x12".parse::<H256>().unwrap_err().to_string();
        assert!(short.contains("got 2 hex digits"), "{short}");
        let bad = format!("0x{}", "zz".repeat(32));
        assert!(matches!(bad.parse::<H256>(), Err(Error::InvalidHex { .. })));
    }

    #[test]
    fn hex_errors_say_what_is_wrong() {
        let digits = "ab".repeat(32);
        let upper = format!("0X{digits}")
            .parse::<H256>()
            .unwrap_err()
            .to_string();
        assert!(upper.contains("lowercase `0x`, got `0X`"), "{upper}");
        assert!(
            !upper.contains("33"),
            "no byte count of the prefix: {upper}"
        );
        let name = "bob".parse::<H256>().unwrap_err().to_string();
        assert!(
            name.contains("`bob` is not hex") && name.contains("'o'"),
            "{name}"
        );
        let odd = format!("0x{}", &digits[1..])
            .parse::<H256>()
            .unwrap_err()
            .to_string();
        assert!(
            odd.contains("64 hex digits") && odd.contains("got 63"),
            "{odd}"
        );
    }
}
