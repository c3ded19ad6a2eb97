//! Balances and exact decimal amounts.
//!
//! A balance is a `u128` count of base units; [`TENSOR`] is 10^18 of them.
//! Amounts are written as plain decimals with up to 18 fractional digits
//! (`"100"`, `"0.5"`, `"0.000000000000000001"`). Parsing is exact and strict:
//! no sign, no exponent, no separators, no more than 18 decimals, no
//! overflow. [`Fixed`](crate::Fixed) fractions use the same notation.

use crate::{Error, Result};

/// An amount of base units. 1 TENSOR = 10^18 base units.
pub type Balance = u128;

/// Number of decimal places of one TENSOR (and of a [`Fixed`](crate::Fixed)).
pub const DECIMALS: u32 = 18;

/// One TENSOR in base units (10^18).
pub const TENSOR: Balance = 1_000_000_000_000_000_000;

/// Parses a decimal with up to 18 fractional digits into a `u128` scaled by
/// 10^18, exactly. Surrounding whitespace is ignored.
pub(crate) fn parse_scaled(input: &str) -> Result<u128> {
    let s = input.trim();
    if s.is_empty() {
        return Err(Error::AmountEmpty);
    }
    let malformed = |reason| Error::AmountMalformed {
        input: input.to_string(),
        reason,
    };
    if s.starts_with('-') {
        return Err(malformed("amounts cannot be negative"));
    }
    let (int_part, frac_part) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if int_part.is_empty() {
        return Err(malformed("a digit is required before the decimal point"));
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("only digits and one decimal point are allowed"));
    }
    let frac = frac_part.unwrap_or("");
    if frac_part.is_some() && frac.is_empty() {
        return Err(malformed("a digit is required after the decimal point"));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("only digits and one decimal point are allowed"));
    }
    if frac.len() > DECIMALS as usize {
        return Err(Error::AmountTooPrecise {
            input: input.to_string(),
            max: DECIMALS,
        });
    }
    let overflow = || Error::AmountOverflow {
        input: input.to_string(),
    };
    let mut whole: u128 = 0;
    for b in int_part.bytes() {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u128::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    let mut fraction: u128 = 0;
    for b in frac.bytes() {
        fraction = fraction * 10 + u128::from(b - b'0');
    }
    fraction *= 10u128.pow(DECIMALS - frac.len() as u32);
    whole
        .checked_mul(TENSOR)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(overflow)
}

/// Formats a `u128` scaled by 10^18 as the shortest exact decimal.
pub(crate) fn format_scaled(value: u128) -> String {
    let whole = value / TENSOR;
    let fraction = value % TENSOR;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:018}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses an amount of TENSOR (`"100"`, `"0.5"`) into base units, exactly.
///
/// ```
/// use hypertensor_primitives::{parse_tensor, TENSOR};
/// assert_eq!(parse_tensor("0.5").unwrap(), TENSOR / 2);
/// assert!(parse_tensor("1e3").is_err());
/// ```
pub fn parse_tensor(input: &str) -> Result<Balance> {
    parse_scaled(input)
}

/// Formats base units as an exact amount of TENSOR without trailing zeros
/// (`1_500_000_000_000_000_000` -> `"1.5"`).
pub fn format_tensor(amount: Balance) -> String {
    format_scaled(amount)
}

/// Serde adapter writing a [`Balance`] as a TENSOR decimal string (`"0.001"`)
/// and reading either such a string or an integer of base units up to
/// `u64::MAX` (JSON parsers turn larger integers into floats, which are
/// refused rather than rounded).
///
/// For human-edited files (genesis, parameters): use with
/// `#[serde(with = "hypertensor_primitives::units::serde_tensor")]`.
pub mod serde_tensor {
    use super::{Balance, format_tensor, parse_tensor};
    use serde::{Deserializer, Serializer};

    /// Serializes as a TENSOR decimal string.
    pub fn serialize<S: Serializer>(value: &Balance, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_tensor(*value))
    }

    struct TensorVisitor;

    impl serde::de::Visitor<'_> for TensorVisitor {
        type Value = Balance;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an amount of TENSOR as a decimal string, or an integer of base units")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Balance, E> {
            parse_tensor(v).map_err(E::custom)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Balance, E> {
            Ok(Balance::from(v))
        }

        fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Balance, E> {
            Ok(v)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Balance, E> {
            u128::try_from(v).map_err(|_| E::custom("amounts cannot be negative"))
        }
    }

    /// Deserializes a TENSOR decimal string, or an integer of base units.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Balance, D::Error> {
        d.deserialize_any(TensorVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_and_fractional_amounts_exactly() {
        assert_eq!(parse_tensor("100").unwrap(), 100 * TENSOR);
        assert_eq!(parse_tensor("0.5").unwrap(), TENSOR / 2);
        assert_eq!(parse_tensor("0.001").unwrap(), TENSOR / 1000);
        assert_eq!(parse_tensor("0.000000000000000001").unwrap(), 1);
        assert_eq!(parse_tensor(" 7 ").unwrap(), 7 * TENSOR);
        assert_eq!(parse_tensor("0").unwrap(), 0);
    }

    #[test]
    fn rejects_bad_amounts_with_named_errors() {
        assert_eq!(parse_tensor(""), Err(Error::AmountEmpty));
        assert!(matches!(
            parse_tensor("-1"),
            Err(Error::AmountMalformed { .. })
        ));
        for bad in [".5", "5.", "1.2.3", "1e3", "1_000", "0x10", "abc", "+1"] {
            assert!(
                matches!(parse_tensor(bad), Err(Error::AmountMalformed { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_tensor("0.0000000000000000001"),
            Err(Error::AmountTooPrecise { max: 18, .. })
        ));
        // u128::MAX / 10^18 is about 3.4e20 TENSOR.
        assert!(matches!(
            parse_tensor("340282366920938463464"),
            Err(Error::AmountOverflow { .. })
        ));
        assert_eq!(
            parse_tensor("340282366920938463463.374607431768211455").unwrap(),
            u128::MAX
        );
    }

    #[test]
    fn formats_shortest_exact_decimal() {
        assert_eq!(format_tensor(100 * TENSOR), "100");
        assert_eq!(format_tensor(TENSOR / 2), "0.5");
        assert_eq!(format_tensor(1), "0.000000000000000001");
        assert_eq!(format_tensor(0), "0");
        assert_eq!(
            format_tensor(u128::MAX),
            "340282366920938463463.374607431768211455"
        );
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Holder {
        #[serde(with = "serde_tensor")]
        amount: Balance,
    }

    #[test]
    fn serde_tensor_reads_strings_and_u64_integers() {
        let h: Holder = serde_json::from_str(r#"{"amount": "0.5"}"#).unwrap();
        assert_eq!(h.amount, TENSOR / 2);
        let h: Holder = serde_json::from_str(r#"{"amount": 7}"#).unwrap();
        assert_eq!(h.amount, 7);
        let max = format!(r#"{{"amount": {}}}"#, u64::MAX);
        assert_eq!(
            serde_json::from_str::<Holder>(&max).unwrap().amount,
            u128::from(u64::MAX)
        );
        // Larger integers lose precision in self-describing formats: refused.
        let big = format!(r#"{{"amount": {}}}"#, u128::MAX);
        assert!(serde_json::from_str::<Holder>(&big).is_err());
        assert!(serde_json::from_str::<Holder>(r#"{"amount": -1}"#).is_err());
        assert!(serde_json::from_str::<Holder>(r#"{"amount": "1e3"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Holder {
                amount: TENSOR / 1000
            })
            .unwrap(),
            r#"{"amount":"0.001"}"#
        );
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(v in proptest::prelude::any::<u128>()) {
            proptest::prop_assert_eq!(parse_tensor(&format_tensor(v)).unwrap(), v);
        }
    }
}
