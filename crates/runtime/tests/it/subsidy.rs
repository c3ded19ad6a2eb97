//! The subsidy schedule (SPEC §3.5).

use hypertensor_primitives::TENSOR;
use hypertensor_runtime::Params;
use hypertensor_runtime::subsidy::{block_subsidy, minted_at, scheduled_total};

use crate::common::Chain;

#[test]
fn exact_value_at_each_halving_boundary() {
    let p = Params::default();
    let initial = p.initial_block_subsidy();
    // (28,000,000 TENSOR / 2) / 5,256,000 blocks, rounded down.
    assert_eq!(initial, 2_663_622_526_636_225_266);
    assert_eq!(block_subsidy(&p, 0), 0, "genesis mints nothing");
    assert_eq!(block_subsidy(&p, 1), initial);
    let h = p.halving_interval;
    for k in 1..64u64 {
        assert_eq!(
            block_subsidy(&p, k * h - 1),
            initial >> (k - 1),
            "last block of era {}",
            k - 1
        );
        assert_eq!(
            block_subsidy(&p, k * h),
            initial >> k,
            "first block of era {k}"
        );
    }
    assert_eq!(block_subsidy(&p, h), 1_331_811_263_318_112_633);
    assert_eq!(block_subsidy(&p, 10 * h), 2_601_193_873_668_188);
    // The subsidy reaches zero by shifting well before 64 halvings, and is
    // zero by rule from the 64th on.
    assert_eq!(block_subsidy(&p, 62 * h), 0);
    assert_eq!(block_subsidy(&p, 64 * h), 0);
    assert_eq!(block_subsidy(&p, u64::MAX), 0);
    let tiny = Params {
        target_max_supply: u128::MAX,
        halving_interval: 1,
        ..Params::default()
    };
    assert_eq!(block_subsidy(&tiny, 63), tiny.initial_block_subsidy() >> 63);
    assert_eq!(block_subsidy(&tiny, 64), 0);
}

#[test]
fn total_over_the_whole_schedule_is_just_under_28m() {
    let p = Params::default();
    let total = scheduled_total(&p, 64 * p.halving_interval);
    // Σ_{k<64} (I >> k) * H, minus the genesis block's I.
    assert_eq!(total, 27_999_997_336_377_473_186_518_734);
    assert!(total < p.target_max_supply);
    assert_eq!(p.target_max_supply - total, 2_663_622_526_813_481_266); // ~2.66 TENSOR
    assert_eq!(scheduled_total(&p, u64::MAX), total);
}

#[test]
fn closed_form_total_matches_block_by_block_sum() {
    let p = Params {
        halving_interval: 7,
        target_max_supply: 1_000_000 * TENSOR,
        ..Params::default()
    };
    let mut sum = 0u128;
    for height in 0..=(70 * 7) {
        sum += block_subsidy(&p, height);
        assert_eq!(scheduled_total(&p, height), sum, "height {height}");
    }
}

#[test]
fn minting_stops_at_the_max_supply() {
    let p = Params::default();
    let cap = p.target_max_supply;
    assert_eq!(minted_at(&p, 1, cap - 5), 5);
    assert_eq!(minted_at(&p, 1, cap), 0);
    assert_eq!(minted_at(&p, 1, 0), p.initial_block_subsidy());
    // On a chain whose endowments leave only 3 base units of room.
    let mut config = hypertensor_runtime::GenesisConfig::dev();
    config.params.target_max_supply = config.accounts.iter().map(|a| a.balance).sum::<u128>() + 3;
    let mut chain = Chain::from_config(&config);
    chain.block(vec![]);
    chain.block(vec![]);
    assert_eq!(
        chain.state.total_issuance(),
        config.params.target_max_supply
    );
}

#[test]
fn blocks_mint_the_subsidy_author_share_and_vault() {
    let mut chain = Chain::new();
    let author = chain.author.account_id();
    let initial = chain.params().initial_block_subsidy();
    let issuance = chain.state.total_issuance();
    chain.block(vec![]);
    assert_eq!(chain.state.total_issuance(), issuance + initial);
    assert_eq!(chain.state.account(&author).free, initial / 10);
    assert_eq!(chain.state.vault(), initial - initial / 10);
}
