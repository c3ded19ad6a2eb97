//! The block subsidy (SPEC §3.5, the whitepaper's `get_block_subsidy`).

use hypertensor_primitives::Balance;

use crate::params::{MAX_HALVINGS, Params};
use crate::types::BlockNumber;

/// Subsidy of the block at `height`: `initial_block_subsidy >> (height /
/// halving_interval)`, zero from the 64th halving on. The genesis block
/// (height 0) mints nothing: issuance there is the genesis endowment.
///
/// This is the schedule; what is actually minted is also capped so total
/// issuance never exceeds `target_max_supply` (see [`minted_at`]).
pub fn block_subsidy(params: &Params, height: BlockNumber) -> Balance {
    if height == 0 {
        return 0;
    }
    let halvings = height / params.halving_interval;
    if halvings >= MAX_HALVINGS {
        return 0;
    }
    params.initial_block_subsidy() >> halvings
}

/// What the block at `height` mints given the issuance before it: the
/// scheduled subsidy, capped at what is left below `target_max_supply`.
pub fn minted_at(params: &Params, height: BlockNumber, issuance: Balance) -> Balance {
    block_subsidy(params, height).min(params.target_max_supply.saturating_sub(issuance))
}

/// Total subsidy of blocks `1..=last` by the schedule alone (closed form
/// per halving era, so it covers the whole 64-year schedule instantly).
pub fn scheduled_total(params: &Params, last: BlockNumber) -> Balance {
    let interval = params.halving_interval;
    let mut total: Balance = 0;
    for era in 0..MAX_HALVINGS {
        let start = (era * interval).max(1);
        let end = era
            .checked_add(1)
            .and_then(|e| e.checked_mul(interval))
            .map_or(last, |e| e.saturating_sub(1).min(last));
        if start > last || start > end {
            break;
        }
        let blocks = u128::from(end - start + 1);
        total += (params.initial_block_subsidy() >> era) * blocks;
    }
    total
}
