//! The Excess Distribution Algorithm (SPEC §3.5, whitepaper §2.5).
//!
//! Splits the vault among in-consensus subnets in proportion to the stake
//! of their scored nodes, with no subnet above the cap `m =
//! max(max_subnet_rewards_weight, 1/n)`; what a capped subnet cannot take is
//! redistributed to the others in proportion to their weights.
//!
//! With weights `w_i = stake_i / Σ stake`, walk the subnets in descending
//! weight (ties: ascending subnet id) keeping `remaining = 1`, `rest = Σ w`:
//! `a_i = min(m, w_i * remaining / rest)`, `remaining -= a_i`, `rest -= w_i`.
//! All fractions are [`Fixed`] and round down; amounts are
//! `floor(vault * a_i)`, so their sum never exceeds the vault and the dust
//! stays in it. Subnets with zero stake get nothing and are left out.

use hypertensor_primitives::{Balance, Fixed, mul_div};

use crate::types::SubnetId;

/// One subnet's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The subnet.
    pub subnet: SubnetId,
    /// Initial weight `stake / Σ stake`.
    pub weight: Fixed,
    /// Allocated weight, at most the cap.
    pub allocation: Fixed,
    /// `floor(vault * allocation)`.
    pub amount: Balance,
}

/// Runs the EDA over `(subnet, stake)` pairs for a vault of `vault` units.
/// Returns the allocations in processing order (descending weight, then
/// ascending subnet id); subnets with zero stake are omitted.
pub fn excess_distribution(
    cap: Fixed,
    stakes: &[(SubnetId, Balance)],
    vault: Balance,
) -> Vec<Allocation> {
    let candidates: Vec<(SubnetId, Balance)> =
        stakes.iter().copied().filter(|(_, s)| *s > 0).collect();
    let n = candidates.len();
    // Stakes are parts of the issuance, far below u128::MAX.
    let total: Balance = candidates
        .iter()
        .map(|(_, s)| *s)
        .fold(0, u128::saturating_add);
    if n == 0 || total == 0 {
        return Vec::new();
    }
    let mut weighted: Vec<(SubnetId, Fixed)> = candidates
        .iter()
        .map(|(id, stake)| {
            (
                *id,
                Fixed::from_rational(*stake, total).unwrap_or(Fixed::ZERO),
            )
        })
        .collect();
    weighted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

    let one_over_n = Fixed::from_rational(1, n as u128).unwrap_or(Fixed::ZERO);
    let m = cap.max(one_over_n);
    let mut remaining = Fixed::ONE.raw();
    let mut rest: u128 = weighted.iter().map(|(_, w)| w.raw()).sum();
    weighted
        .into_iter()
        .map(|(subnet, weight)| {
            // w <= rest, so the share is at most `remaining`.
            let share = if rest == 0 {
                0
            } else {
                mul_div(weight.raw(), remaining, rest).unwrap_or(0)
            };
            let allocation = Fixed::from_raw(share).min(m);
            remaining = remaining.saturating_sub(allocation.raw());
            rest = rest.saturating_sub(weight.raw());
            Allocation {
                subnet,
                weight,
                allocation,
                amount: allocation.mul_floor_unit(vault),
            }
        })
        .collect()
}
