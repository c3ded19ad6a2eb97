//! Fixed-point fractions: `u128` scaled by 10^18 (SPEC §2).
//!
//! # Rounding
//!
//! Every operation rounds **down** (toward zero) and is exact otherwise:
//! products go through a 256-bit intermediate ([`mul_div`]), so `a * b / d`
//! is `floor(a * b / d)` for all `u128` inputs. Whatever rounding leaves over
//! stays with the caller (in the chain: in the rewards vault), so no base unit
//! is ever created. Operations whose exact result does not fit in a `u128`
//! return `None`; nothing wraps or saturates silently.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

use crate::units::{format_scaled, parse_scaled};
use crate::{Error, wide};

/// `floor(a * b / d)` exactly, through a 256-bit intermediate.
///
/// Returns `None` when `d == 0` or when the quotient exceeds `u128::MAX`.
///
/// ```
/// use hypertensor_primitives::mul_div;
/// // 2^127 * 6 overflows u128, the quotient (2^127 * 6) / 8 does not.
/// assert_eq!(mul_div(1 << 127, 6, 8), Some(3 << 125));
/// assert_eq!(mul_div(7, 3, 2), Some(10)); // 10.5 rounds down
/// assert_eq!(mul_div(1, 1, 0), None);
/// ```
pub fn mul_div(a: u128, b: u128, d: u128) -> Option<u128> {
    wide::mul_div_floor(a, b, d)
}

/// A non-negative fraction: `u128` scaled by 10^18 (1.0 = 10^18).
///
/// Written and read as a decimal string (`"0.5"`, `"0.03125"`), in JSON
/// too, so configuration files stay readable and exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fixed(u128);

impl Fixed {
    /// The scale: 1.0 is represented by 10^18.
    pub const SCALE: u128 = 1_000_000_000_000_000_000;
    /// 0.0
    pub const ZERO: Fixed = Fixed(0);
    /// 1.0
    pub const ONE: Fixed = Fixed(Self::SCALE);

    /// The fraction whose scaled representation is `raw` (`raw / 10^18`).
    pub const fn from_raw(raw: u128) -> Fixed {
        Fixed(raw)
    }

    /// The scaled representation (`self * 10^18`).
    pub const fn raw(self) -> u128 {
        self.0
    }

    /// `numerator / 10^decimals` exactly, for constants such as 3.125%
    /// (`Fixed::from_decimal(3125, 5)`). Panics at compile time (in `const`
    /// context) if `decimals > 18` or the value overflows.
    pub const fn from_decimal(numerator: u128, decimals: u32) -> Fixed {
        assert!(decimals <= 18, "a Fixed has at most 18 decimals");
        Fixed(numerator * 10u128.pow(18 - decimals))
    }

    /// `numerator / denominator` rounded down; `None` if the denominator is
    /// zero or the quotient does not fit.
    pub fn from_rational(numerator: u128, denominator: u128) -> Option<Fixed> {
        mul_div(numerator, Self::SCALE, denominator).map(Fixed)
    }

    /// `self + other`, `None` on overflow.
    pub fn checked_add(self, other: Fixed) -> Option<Fixed> {
        self.0.checked_add(other.0).map(Fixed)
    }

    /// `self - other`, `None` if negative.
    pub fn checked_sub(self, other: Fixed) -> Option<Fixed> {
        self.0.checked_sub(other.0).map(Fixed)
    }

    /// `max(self - other, 0)`.
    pub fn saturating_sub(self, other: Fixed) -> Fixed {
        Fixed(self.0.saturating_sub(other.0))
    }

    /// `self * other` rounded down; `None` if it does not fit.
    pub fn checked_mul(self, other: Fixed) -> Option<Fixed> {
        mul_div(self.0, other.0, Self::SCALE).map(Fixed)
    }

    /// `self / other` rounded down; `None` if `other` is zero or the result
    /// does not fit.
    pub fn checked_div(self, other: Fixed) -> Option<Fixed> {
        mul_div(self.0, Self::SCALE, other.0).map(Fixed)
    }

    /// `floor(amount * self)`: this fraction of an integer amount (a balance).
    /// `None` only if the result exceeds `u128::MAX` (never for `self <= 1`).
    pub fn mul_floor(self, amount: u128) -> Option<u128> {
        mul_div(amount, self.0, Self::SCALE)
    }

    /// `floor(amount * self)` for fractions known to be at most 1, where the
    /// result is never above `amount` and so always fits.
    pub fn mul_floor_unit(self, amount: u128) -> u128 {
        debug_assert!(self <= Fixed::ONE);
        // With self <= 1 the quotient is <= amount, so mul_div cannot fail.
        mul_div(amount, self.0.min(Self::SCALE), Self::SCALE).unwrap_or(amount)
    }
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_scaled(self.0))
    }
}

impl FromStr for Fixed {
    type Err = Error;
    fn from_str(s: &str) -> Result<Fixed, Error> {
        parse_scaled(s).map(Fixed)
    }
}

impl Serialize for Fixed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Fixed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fixed, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constants_and_rationals() {
        assert_eq!(Fixed::from_decimal(3125, 5).to_string(), "0.03125");
        assert_eq!(Fixed::from_decimal(875, 3).raw(), 875 * 10u128.pow(15));
        assert_eq!(
            Fixed::from_rational(2, 3).unwrap().raw(),
            666_666_666_666_666_666
        );
        assert_eq!(Fixed::from_rational(1, 0), None);
        assert_eq!(Fixed::from_rational(u128::MAX, 1), None);
    }

    #[test]
    fn arithmetic_rounds_down_and_refuses_overflow() {
        let third = Fixed::from_rational(1, 3).unwrap();
        assert_eq!(
            third.checked_mul(Fixed::from_decimal(3, 0)).unwrap().raw(),
            999_999_999_999_999_999
        );
        assert_eq!(
            Fixed::ONE.checked_div(Fixed::from_decimal(3, 0)).unwrap(),
            third
        );
        assert_eq!(Fixed::ONE.checked_div(Fixed::ZERO), None);
        assert_eq!(
            Fixed::from_raw(u128::MAX).checked_mul(Fixed::from_decimal(2, 0)),
            None
        );
        assert_eq!(
            Fixed::from_raw(u128::MAX).checked_add(Fixed::from_raw(1)),
            None
        );
        assert_eq!(Fixed::ZERO.checked_sub(Fixed::from_raw(1)), None);
        assert_eq!(Fixed::ZERO.saturating_sub(Fixed::ONE), Fixed::ZERO);
        // 28M TENSOR * 0.1 needs more than 128 bits in the product; exact anyway.
        let supply = 28_000_000 * crate::TENSOR;
        assert_eq!(
            Fixed::from_decimal(1, 1).mul_floor(supply),
            Some(2_800_000 * crate::TENSOR)
        );
        assert_eq!(Fixed::from_rational(1, 3).unwrap().mul_floor_unit(10), 3);
    }

    #[test]
    fn decimal_strings_and_json() {
        let f: Fixed = "0.875".parse().unwrap();
        assert_eq!(f, Fixed::from_decimal(875, 3));
        assert_eq!(serde_json::to_string(&f).unwrap(), "\"0.875\"");
        let back: Fixed = serde_json::from_str("\"0.875\"").unwrap();
        assert_eq!(back, f);
        assert!(serde_json::from_str::<Fixed>("\"0.5x\"").is_err());
        assert!(serde_json::from_str::<Fixed>("0.5").is_err());
    }

    proptest! {
        #[test]
        fn mul_floor_unit_never_exceeds_amount(raw in 0..=Fixed::SCALE, amount in any::<u128>()) {
            let part = Fixed::from_raw(raw).mul_floor_unit(amount);
            prop_assert!(part <= amount);
            prop_assert_eq!(Some(part), Fixed::from_raw(raw).mul_floor(amount));
        }

        #[test]
        fn rational_is_floor(n in any::<u64>(), d in 1..u64::MAX) {
            let f = Fixed::from_rational(u128::from(n), u128::from(d)).unwrap();
            // f * d <= n * SCALE < (f + 1) * d
            let (n, d) = (u128::from(n), u128::from(d));
            prop_assert!(mul_div(f.raw(), d, 1).unwrap() <= n * Fixed::SCALE);
            prop_assert!(mul_div(f.raw() + 1, d, 1).unwrap() > n * Fixed::SCALE);
        }
    }
}
