//! An elected validator that stays silent: every validator of this subnet
//! does nothing when elected, so the first consensus epoch has none.

use hypertensor_duties::byzantine::Behaviour;
use hypertensor_runtime::{Event, PenaltyReason, SettlementOutcome};

use crate::scenario::{EPOCH_LENGTH, byzantine, config, run};

#[test]
fn a_silent_elected_validator_is_penalized_and_the_emission_stays_in_the_vault() {
    let mut config = config("silent");
    config.validators = 3;
    config.hosters = Some(3);
    config.blocks_per_hoster = 30;
    for i in 0..3 {
        config.faults.insert(
            format!("validator-{i}"),
            byzantine(Behaviour::SilentWhenElected),
        );
    }
    let s = run(config, 1);
    let r = &s.reports[0];
    assert_eq!(r.outcome, Some(SettlementOutcome::NoProposal));
    let elected = r.elected.expect("a validator was elected");
    let node = r.nodes.iter().find(|n| n.node == elected).unwrap();
    assert!(node.name.starts_with("validator-"));
    assert_eq!(node.penalties, 1, "the silent validator is penalized");
    let events = s.settlement_events(r.epoch);
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::PenaltyAdded { node, reason: PenaltyReason::NoProposal, .. } if *node == elected
    )));
    assert!(
        !events.iter().any(|e| matches!(
            e.event,
            Event::RewardPaid { .. } | Event::SubnetAllocation { .. }
        )),
        "nothing is paid"
    );
    // Nothing was ever paid out of the vault: it holds at least the vault
    // share of every block's subsidy so far.
    let params = s
        .runtime
        .block_on(async { s.devnet.chain.parameters().await.unwrap() });
    let blocks = u128::from((r.epoch + 1) * EPOCH_LENGTH);
    let per_block = params.initial_block_subsidy() * 9 / 10;
    assert!(
        r.vault >= per_block * blocks,
        "vault {} < {}",
        r.vault,
        per_block * blocks
    );
}
