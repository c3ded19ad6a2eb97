//! 256-bit intermediates for `u128` multiply-then-divide.

const LOW: u128 = u64::MAX as u128;

/// The full 256-bit product of two `u128`s as `(high, low)` halves.
pub(crate) fn full_mul(a: u128, b: u128) -> (u128, u128) {
    let (a1, a0) = (a >> 64, a & LOW);
    let (b1, b0) = (b >> 64, b & LOW);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // Each term is below 2^64, so the sum of three cannot overflow.
    let mid = (p00 >> 64) + (p01 & LOW) + (p10 & LOW);
    let low = (p00 & LOW) | (mid << 64);
    let high = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (high, low)
}

/// `floor(a * b / d)` computed exactly; `None` when `d == 0` or the quotient
/// does not fit in a `u128`.
pub(crate) fn mul_div_floor(a: u128, b: u128, d: u128) -> Option<u128> {
    if d == 0 {
        return None;
    }
    let (high, low) = full_mul(a, b);
    if high == 0 {
        return Some(low / d);
    }
    if high >= d {
        return None; // the quotient needs more than 128 bits
    }
    if d <= LOW {
        // Schoolbook division in two 64-bit digits: every partial remainder
        // is below d < 2^64, so `(rem << 64) | digit` fits in a u128.
        let t1 = (high << 64) | (low >> 64);
        let (q1, r1) = (t1 / d, t1 % d);
        let t0 = (r1 << 64) | (low & LOW);
        return Some((q1 << 64) | (t0 / d));
    }
    // Binary long division. Invariant: rem < d before each step; after the
    // shift the true remainder is below 2d < 2^129, the lost top bit is kept
    // in `carry`, and one subtraction of d restores the invariant.
    let mut rem = high;
    let mut quotient: u128 = 0;
    for i in (0..128).rev() {
        let carry = rem >> 127;
        rem = (rem << 1) | ((low >> i) & 1);
        quotient <<= 1;
        if carry == 1 || rem >= d {
            rem = rem.wrapping_sub(d);
            quotient |= 1;
        }
    }
    Some(quotient)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (h, l) - (h2, l2) for 256-bit values, assuming no underflow.
    fn sub256(a: (u128, u128), b: (u128, u128)) -> (u128, u128) {
        let (low, borrow) = a.1.overflowing_sub(b.1);
        (a.0 - b.0 - u128::from(borrow), low)
    }

    fn check(a: u128, b: u128, d: u128) {
        let product = full_mul(a, b);
        match mul_div_floor(a, b, d) {
            Some(q) => {
                // q * d <= a * b and a * b - q * d < d.
                let qd = full_mul(q, d);
                assert!(qd <= product, "q*d above a*b for {a} {b} {d}");
                let rest = sub256(product, qd);
                assert!(
                    rest.0 == 0 && rest.1 < d,
                    "remainder not below d for {a} {b} {d}"
                );
            }
            None => {
                // Only allowed when d == 0 or a*b >= 2^128 * d.
                assert!(d == 0 || product.0 >= d, "spurious None for {a} {b} {d}");
            }
        }
    }

    #[test]
    fn full_mul_known_values() {
        assert_eq!(full_mul(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(full_mul(1 << 64, 1 << 64), (1, 0));
        assert_eq!(full_mul(12345, 678), (0, 12345 * 678));
    }

    #[test]
    fn mul_div_edges() {
        assert_eq!(
            mul_div_floor(u128::MAX, u128::MAX, u128::MAX),
            Some(u128::MAX)
        );
        assert_eq!(mul_div_floor(u128::MAX, 2, 2), Some(u128::MAX));
        assert_eq!(mul_div_floor(u128::MAX, 2, 1), None);
        assert_eq!(mul_div_floor(1, 1, 0), None);
        assert_eq!(mul_div_floor(7, 3, 2), Some(10));
        check(u128::MAX, u128::MAX - 5, u128::MAX - 1);
        check(1 << 100, 1 << 100, (1 << 80) + 12345);
        check(10u128.pow(30), 10u128.pow(18), 10u128.pow(18));
    }

    proptest! {
        #[test]
        fn mul_div_is_exact_floor(a in any::<u128>(), b in any::<u128>(), d in 1..=u128::MAX) {
            check(a, b, d);
        }

        #[test]
        fn mul_div_small_divisor(a in any::<u128>(), b in any::<u128>(), d in 1..=(u64::MAX as u128)) {
            check(a, b, d);
        }

        #[test]
        fn mul_div_matches_u128_when_product_fits(a in any::<u64>(), b in any::<u64>(), d in 1..=u128::MAX) {
            let (a, b) = (u128::from(a), u128::from(b));
            prop_assert_eq!(mul_div_floor(a, b, d), Some(a * b / d));
        }
    }
}
