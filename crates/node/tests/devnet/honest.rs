//! An honest subnet (2 validators, 6 hosters of 15 blocks, 3 per block)
//! over four consensus epochs.

use std::sync::OnceLock;

use hypertensor_node::devnet::NODE_STAKE;
use hypertensor_primitives::Fixed;
use hypertensor_runtime::NodeClass;

use crate::scenario::{Scenario, config, in_consensus_ratio, node_rewards, run};

/// Consensus epochs the honest devnet runs before the checks.
const EPOCHS: u64 = 4;

/// The honest devnet, started by the first test that needs it and left
/// running for the others (the phase and stake tests use its nodes).
pub(crate) fn honest() -> &'static Scenario {
    static SCENARIO: OnceLock<Scenario> = OnceLock::new();
    SCENARIO.get_or_init(|| {
        let mut config = config("honest");
        config.validators = 2;
        config.blocks_per_hoster = 15;
        run(config, EPOCHS)
    })
}

#[test]
fn every_epoch_is_accepted_with_at_least_two_thirds_attesting() {
    let s = honest();
    let min = Fixed::from_rational(66, 100).unwrap();
    for r in &s.reports {
        let ratio = in_consensus_ratio(r)
            .unwrap_or_else(|| panic!("epoch {} not in consensus: {:?}", r.epoch, r.outcome));
        assert!(ratio >= min, "epoch {}: ratio {ratio}", r.epoch);
        assert!(r.elected.is_some());
        assert!(r.attesters.len() * 100 >= r.snapshot * 66);
    }
}

#[test]
fn classes_are_promoted_from_idle_to_validator() {
    let s = honest();
    let initial: Vec<&str> = vec!["validator-0", "validator-1", "hoster-0"];
    let first = &s.reports[0];
    for n in &first.nodes {
        let expected = if initial.contains(&n.name.as_str()) {
            NodeClass::Validator
        } else {
            NodeClass::Idle
        };
        assert_eq!(
            n.class, expected,
            "{} after the first consensus epoch",
            n.name
        );
    }
    // Two in-consensus epochs make an Idle node Included; two more with a
    // positive score make it a Validator.
    assert!(
        s.reports[1]
            .nodes
            .iter()
            .filter(|n| !initial.contains(&n.name.as_str()))
            .all(|n| n.class == NodeClass::Included),
        "{:?}",
        s.reports[1].nodes
    );
    let last = s.reports.last().unwrap();
    assert_eq!(last.nodes.len(), 8, "no node was removed");
    for n in &last.nodes {
        assert_eq!(n.class, NodeClass::Validator, "{} at the end", n.name);
        assert_eq!(n.penalties, 0, "{} has penalties", n.name);
    }
}

#[test]
fn rewards_follow_the_proposal_and_honest_hosters_are_paid_alike() {
    let s = honest();
    for r in &s.reports {
        let events = s.settlement_events(r.epoch);
        let paid: u128 = node_rewards(&events).values().sum();
        let Some(hypertensor_runtime::SettlementOutcome::InConsensus { allocation, .. }) =
            r.outcome
        else {
            panic!("epoch {} not in consensus", r.epoch);
        };
        assert!(
            paid > 0 && paid <= allocation,
            "epoch {}: {paid} of {allocation}",
            r.epoch
        );
        for n in &r.nodes {
            if n.score.is_some_and(|s| s > 0) {
                assert!(
                    n.reward > 0,
                    "epoch {}: {} scored but unpaid",
                    r.epoch,
                    n.name
                );
            }
        }
    }
    // Hosters serving spans of equal length do equal work: in the last
    // epoch the hosters that were not initial validators (so earn no
    // validator score yet) have scores within 1% of each other.
    let last = s.reports.last().unwrap();
    let hoster_scores: Vec<u128> = last
        .nodes
        .iter()
        .filter(|n| n.name.starts_with("hoster-") && n.name != "hoster-0")
        .map(|n| n.score.expect("every hoster is scored"))
        .collect();
    let (lo, hi) = (
        *hoster_scores.iter().min().unwrap(),
        *hoster_scores.iter().max().unwrap(),
    );
    assert!(lo > 0 && hi - lo <= hi / 100, "{hoster_scores:?}");
    // Every owner ends richer than it started (stake bonded, reward paid).
    for n in &last.nodes {
        assert!(n.balance > NODE_STAKE, "{}: {}", n.name, n.balance);
    }
}

#[test]
fn issuance_is_conserved_at_every_epoch_boundary() {
    let s = honest();
    assert!(s.totals.len() as u64 >= super::honest::EPOCHS);
    let mut previous = 0;
    for t in &s.totals {
        assert_eq!(
            t.issuance,
            t.free + t.staked + t.unbonding + t.vault + t.treasury,
            "{t:?}"
        );
        assert!(t.issuance > previous, "the subsidy is minted every block");
        previous = t.issuance;
    }
}
