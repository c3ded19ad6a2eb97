//! The Excess Distribution Algorithm: worked examples and properties.

use hypertensor_primitives::{Fixed, TENSOR, mul_div};
use hypertensor_runtime::eda::{Allocation, excess_distribution};
use proptest::prelude::*;

fn half() -> Fixed {
    Fixed::from_decimal(5, 1)
}

fn by_subnet(mut a: Vec<Allocation>) -> Vec<Allocation> {
    a.sort_by_key(|x| x.subnet);
    a
}

#[test]
fn one_subnet_takes_the_whole_vault() {
    let out = excess_distribution(half(), &[(7, 500 * TENSOR)], 1_000_003);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].weight, Fixed::ONE);
    // m = max(0.5, 1/1) = 1.
    assert_eq!(out[0].allocation, Fixed::ONE);
    assert_eq!(out[0].amount, 1_000_003);
}

#[test]
fn all_capped() {
    // Four equal subnets with a 25% cap: each exactly at the cap.
    let cap = Fixed::from_decimal(25, 2);
    let stakes: Vec<(u32, u128)> = (1..=4).map(|i| (i, 100 * TENSOR)).collect();
    let out = excess_distribution(cap, &stakes, 1000 * TENSOR);
    for a in &out {
        assert_eq!(a.allocation, cap);
        assert_eq!(a.amount, 250 * TENSOR);
    }
    // A cap below 1/n is raised to 1/n: two subnets with a 30% cap get 50%.
    let out = excess_distribution(Fixed::from_decimal(3, 1), &[(1, 5), (2, 5)], 100);
    assert!(out.iter().all(|a| a.allocation == half() && a.amount == 50));
}

#[test]
fn one_dominant_subnet_is_capped_and_the_excess_shared() {
    // Stakes 90 / 5 / 5: weights 0.9, 0.05, 0.05, cap 0.5.
    // a1 = min(0.5, 0.9) = 0.5; remaining 0.5, rest 0.1;
    // a2 = 0.05 * 0.5 / 0.1 = 0.25; a3 = 0.05 * 0.25 / 0.05 = 0.25.
    let out = excess_distribution(half(), &[(1, 90), (2, 5), (3, 5)], 1000 * TENSOR);
    let out = by_subnet(out);
    assert_eq!(out[0].weight, Fixed::from_decimal(9, 1));
    assert_eq!(out[0].allocation, half());
    assert_eq!(out[1].allocation, Fixed::from_decimal(25, 2));
    assert_eq!(out[2].allocation, Fixed::from_decimal(25, 2));
    assert_eq!(
        out.iter().map(|a| a.amount).collect::<Vec<_>>(),
        vec![500 * TENSOR, 250 * TENSOR, 250 * TENSOR]
    );
}

#[test]
fn partial_cap_redistributes_proportionally() {
    // 50 / 30 / 20 with a 40% cap: 0.4, then 0.3*0.6/0.5 = 0.36, 0.2*0.6/0.5 = 0.24.
    let out = by_subnet(excess_distribution(
        Fixed::from_decimal(4, 1),
        &[(1, 50), (2, 30), (3, 20)],
        100 * TENSOR,
    ));
    let allocations: Vec<String> = out.iter().map(|a| a.allocation.to_string()).collect();
    assert_eq!(allocations, ["0.4", "0.36", "0.24"]);
    assert_eq!(out.iter().map(|a| a.amount).sum::<u128>(), 100 * TENSOR);
}

#[test]
fn order_is_descending_weight_then_subnet_id_and_zero_stake_is_left_out() {
    let out = excess_distribution(half(), &[(9, 10), (3, 10), (5, 30), (4, 0)], 1000);
    assert_eq!(
        out.iter().map(|a| a.subnet).collect::<Vec<_>>(),
        vec![5, 3, 9]
    );
    assert!(excess_distribution(half(), &[], 1000).is_empty());
    assert!(excess_distribution(half(), &[(1, 0)], 1000).is_empty());
}

fn stakes_strategy() -> impl Strategy<Value = Vec<(u32, u128)>> {
    prop::collection::vec(1u128..=2_560_000 * TENSOR, 1..64).prop_map(|stakes| {
        stakes
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u32 + 1, s))
            .collect()
    })
}

proptest! {
    #[test]
    fn allocations_sum_to_the_vault_minus_dust(
        stakes in stakes_strategy(),
        cap_pct in 1u128..=100,
        vault in 0u128..=28_000_000 * TENSOR,
    ) {
        let cap = Fixed::from_raw(cap_pct * Fixed::SCALE / 100);
        let out = excess_distribution(cap, &stakes, vault);
        let n = out.len() as u128;
        let fraction_sum: u128 = out.iter().map(|a| a.allocation.raw()).sum();
        prop_assert!(fraction_sum <= Fixed::SCALE);
        // Fractions lose at most n units of 10^-18 (1/n rounded down).
        prop_assert!(Fixed::SCALE - fraction_sum <= n, "fractions sum to {}", fraction_sum);
        let paid: u128 = out.iter().map(|a| a.amount).sum();
        prop_assert!(paid <= vault);
        let dust_bound = n + mul_div(vault, n, Fixed::SCALE).unwrap() + 1;
        prop_assert!(vault - paid <= dust_bound, "dust {} above {}", vault - paid, dust_bound);
    }

    #[test]
    fn none_above_the_cap(stakes in stakes_strategy(), cap_pct in 1u128..=100) {
        let cap = Fixed::from_raw(cap_pct * Fixed::SCALE / 100);
        let out = excess_distribution(cap, &stakes, 1000 * TENSOR);
        let m = cap.max(Fixed::from_rational(1, out.len() as u128).unwrap());
        prop_assert!(out.iter().all(|a| a.allocation <= m));
    }

    #[test]
    fn uncapped_subnets_keep_their_proportions(stakes in stakes_strategy(), cap_pct in 1u128..=100) {
        let cap = Fixed::from_raw(cap_pct * Fixed::SCALE / 100);
        let out = excess_distribution(cap, &stakes, 1000 * TENSOR);
        let n = out.len() as u128;
        let m = cap.max(Fixed::from_rational(1, n).unwrap());
        let uncapped: Vec<&Allocation> = out.iter().filter(|a| a.allocation < m).collect();
        for (i, a) in uncapped.iter().enumerate() {
            for b in &uncapped[i + 1..] {
                // a_i / w_i == a_j / w_j up to rounding drift of n + 2 units.
                let (ai, wi, aj, wj) = (a.allocation.raw(), a.weight.raw(), b.allocation.raw(), b.weight.raw());
                let diff = (ai * wj).abs_diff(aj * wi);
                prop_assert!(diff <= (n + 2) * (wi + wj), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn deterministic_and_independent_of_input_order(
        stakes in stakes_strategy(),
        cap_pct in 1u128..=100,
        vault in 0u128..=28_000_000 * TENSOR,
        rotate in 0usize..64,
    ) {
        let cap = Fixed::from_raw(cap_pct * Fixed::SCALE / 100);
        let first = excess_distribution(cap, &stakes, vault);
        prop_assert_eq!(&first, &excess_distribution(cap, &stakes, vault));
        let mut shuffled = stakes.clone();
        shuffled.reverse();
        let len = shuffled.len();
        shuffled.rotate_left(rotate % len);
        prop_assert_eq!(first, excess_distribution(cap, &shuffled, vault));
    }
}
