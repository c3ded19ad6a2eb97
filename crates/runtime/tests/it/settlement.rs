//! Each settlement outcome of SPEC §3.5.

use hypertensor_primitives::{Fixed, TENSOR};
use hypertensor_runtime::{Event, Params, PenaltyReason, SettlementOutcome};

use crate::common::{Chain, active_subnet, consensus_round};

fn penalties(chain: &Chain, subnet: u32) -> Vec<(u32, u32)> {
    chain
        .state
        .subnet_nodes(subnet)
        .map(|n| (n.id, n.penalties))
        .collect()
}

fn paid(events: &[Event]) -> u128 {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RewardPaid { amount, .. } => Some(*amount),
            _ => None,
        })
        .sum()
}

#[test]
fn no_proposal_penalizes_the_elected_validator_and_pays_nothing() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 0, 1000 * TENSOR);
    let epoch = chain.epoch();
    let elected = chain.state.consensus_data(s.id, epoch).unwrap().validator;
    chain.run_to_epoch(epoch + 1);
    let events = chain.events();
    assert!(events.contains(&Event::PenaltyAdded {
        subnet: s.id,
        node: elected,
        reason: PenaltyReason::NoProposal,
        penalties: 1
    }));
    assert!(events.contains(&Event::EpochSettled {
        subnet: s.id,
        epoch,
        outcome: SettlementOutcome::NoProposal
    }));
    assert_eq!(paid(&events), 0);
    assert_eq!(
        chain.state.consensus_data(s.id, epoch).unwrap().outcome,
        Some(SettlementOutcome::NoProposal)
    );
    assert_eq!(chain.state.subnet_node(s.id, elected).unwrap().penalties, 1);
}

#[test]
fn ratio_below_minimum_slashes_and_penalizes() {
    let mut chain = Chain::new();
    // Stake 100 TENSOR so the slash stays under max_slash (10 TENSOR).
    let s = active_subnet(&mut chain, "s", 3, 0, 100 * TENSOR);
    let epoch = chain.epoch();
    let scores = vec![(s.nodes[0].2, 1), (s.nodes[1].2, 1), (s.nodes[2].2, 1)];
    let elected = consensus_round(&mut chain, &s, scores, |_| false);
    let treasury = chain.state.treasury();
    chain.run_to_epoch(epoch + 1);
    // ratio = 1/3 = 0.333333333333333333; ratio / 0.66 = 0.505050505050505050;
    // shortfall = 0.494949494949494950; stake * 0.03125 = 3.125 TENSOR;
    // slash = floor(3.125e18 * 0.494949494949494950) = 1.546717171717171718 TENSOR.
    let slashed = 1_546_717_171_717_171_718;
    let ratio = Fixed::from_rational(1, 3).unwrap();
    let events = chain.events();
    assert!(events.contains(&Event::Slashed {
        subnet: s.id,
        node: elected,
        amount: slashed
    }));
    assert!(events.contains(&Event::EpochSettled {
        subnet: s.id,
        epoch,
        outcome: SettlementOutcome::BelowMinAttestation { ratio, slashed }
    }));
    assert!(events.contains(&Event::PenaltyAdded {
        subnet: s.id,
        node: elected,
        reason: PenaltyReason::InsufficientAttestations,
        penalties: 1
    }));
    assert_eq!(paid(&events), 0);
    assert_eq!(chain.state.treasury(), treasury + slashed);
    assert_eq!(
        chain.state.subnet_node(s.id, elected).unwrap().stake,
        100 * TENSOR - slashed
    );
}

#[test]
fn slash_is_capped_at_max_slash() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 0, 1000 * TENSOR);
    let epoch = chain.epoch();
    let elected = consensus_round(&mut chain, &s, vec![], |_| false);
    chain.run_to_epoch(epoch + 1);
    // 1000 * 0.03125 * 0.4949... = 15.47 TENSOR, capped at 10.
    assert!(chain.events().contains(&Event::Slashed {
        subnet: s.id,
        node: elected,
        amount: 10 * TENSOR
    }));
}

#[test]
fn in_consensus_pays_the_vault_by_stake_and_score() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 0, 1000 * TENSOR);
    let epoch = chain.epoch();
    // Make stakes differ: node 1 adds 1000 TENSOR.
    let (owner0, _, n0) = &s.nodes[0];
    chain
        .call(
            &crate::common::key("alice"),
            hypertensor_runtime::Call::Transfer {
                to: owner0.account_id(),
                amount: 1000 * TENSOR,
            },
        )
        .unwrap();
    chain
        .call(
            owner0,
            hypertensor_runtime::Call::AddStake {
                subnet: s.id,
                node: *n0,
                amount: 1000 * TENSOR,
            },
        )
        .unwrap();
    let scores = vec![(s.nodes[0].2, 1), (s.nodes[1].2, 2), (s.nodes[2].2, 5)];
    let elected = consensus_round(&mut chain, &s, scores.clone(), |_| true);
    // Run to the last block of the epoch and read the vault settlement will split.
    while chain.state.height() + 1 < (epoch + 1) * chain.params().epoch_length {
        chain.block(vec![]);
    }
    let vault = chain.state.vault();
    let owners: Vec<_> = s
        .nodes
        .iter()
        .map(|(o, _, _)| chain.state.account(&o.account_id()).free)
        .collect();
    chain.block(vec![]);
    let events = chain.events();
    // One subnet: allocation = the whole vault.
    let allocation = vault;
    assert!(events.contains(&Event::EpochSettled {
        subnet: s.id,
        epoch,
        outcome: SettlementOutcome::InConsensus {
            ratio: Fixed::ONE,
            allocation
        }
    }));
    // Validator: A * 5% * ratio(1). Rest: 40% by stake (2000:1000:1000), 60% by score (1:2:5).
    let validator_part = allocation * 5 / 100;
    let rest = allocation - validator_part;
    let by_stake = rest * 40 / 100;
    let by_score = rest - by_stake;
    let stakes = [2000u128, 1000, 1000];
    let mut expected: Vec<u128> = (0..3)
        .map(|i| by_stake * stakes[i] / 4000 + by_score * scores[i].1 / 8)
        .collect();
    let elected_index = s.nodes.iter().position(|(_, _, n)| *n == elected).unwrap();
    expected[elected_index] += validator_part;
    for i in 0..3 {
        let now = chain.state.account(&s.nodes[i].0.account_id()).free;
        assert_eq!(
            now - owners[i],
            expected[i],
            "owner of node {}",
            s.nodes[i].2
        );
    }
    let total_paid: u128 = expected.iter().sum();
    assert_eq!(paid(&events), total_paid);
    // Dust stays in the vault: the new vault is the old one minus what was
    // paid plus this block's subsidy share.
    let minted = chain.params().initial_block_subsidy();
    assert_eq!(
        chain.state.vault(),
        vault - total_paid + minted - minted / 10
    );
    assert!(vault - total_paid < 10, "dust {}", vault - total_paid);
}

#[test]
fn non_attesters_are_penalized_only_at_supermajority() {
    let params = Params {
        epoch_length: 10,
        max_initial_validators: 8,
        ..Params::devnet()
    };
    // 8 validators, 7 attest (ratio 0.875): the silent one gets a penalty.
    let mut chain = Chain::with_params(params.clone());
    let s = active_subnet(&mut chain, "s", 8, 0, 1000 * TENSOR);
    let epoch = chain.epoch();
    let record = chain.state.consensus_data(s.id, epoch).unwrap().clone();
    let silent = *record
        .snapshot
        .iter()
        .find(|n| **n != record.validator)
        .unwrap();
    let scores: Vec<_> = s.nodes.iter().map(|(_, _, n)| (*n, 1)).collect();
    consensus_round(&mut chain, &s, scores.clone(), |n| n != silent);
    chain.run_to_epoch(epoch + 1);
    assert!(chain.events().contains(&Event::PenaltyAdded {
        subnet: s.id,
        node: silent,
        reason: PenaltyReason::DidNotAttest,
        penalties: 1
    }));
    assert!(matches!(
        chain.state.consensus_data(s.id, epoch).unwrap().outcome,
        Some(SettlementOutcome::InConsensus { ratio, .. }) if ratio == Fixed::from_decimal(875, 3)
    ));

    // 6 of 8 attest (ratio 0.75): in consensus, silent nodes not penalized.
    let mut chain = Chain::with_params(params);
    let s = active_subnet(&mut chain, "s", 8, 0, 1000 * TENSOR);
    let epoch = chain.epoch();
    let record = chain.state.consensus_data(s.id, epoch).unwrap().clone();
    let silent: Vec<u32> = record
        .snapshot
        .iter()
        .copied()
        .filter(|n| *n != record.validator)
        .take(2)
        .collect();
    consensus_round(&mut chain, &s, scores, |n| !silent.contains(&n));
    chain.run_to_epoch(epoch + 1);
    assert!(
        !chain
            .events()
            .iter()
            .any(|e| matches!(e, Event::PenaltyAdded { .. }))
    );
    assert!(paid(&chain.events()) > 0);
}

#[test]
fn all_zero_scores_hold_rewards_in_the_vault() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 0, 1000 * TENSOR);
    let epoch = chain.epoch();
    let scores = s.nodes.iter().map(|(_, _, n)| (*n, 0)).collect();
    consensus_round(&mut chain, &s, scores, |_| true);
    let vault = chain.state.vault();
    chain.run_to_epoch(epoch + 1);
    let events = chain.events();
    assert!(events.contains(&Event::EpochSettled {
        subnet: s.id,
        epoch,
        outcome: SettlementOutcome::HeldRewards { ratio: Fixed::ONE }
    }));
    assert_eq!(paid(&events), 0);
    assert!(chain.state.vault() > vault);
    assert!(penalties(&chain, s.id).iter().all(|(_, p)| *p == 0));
}

#[test]
fn unscored_nodes_get_penalties_positive_scores_clear_them_and_max_removes() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 0, 1000 * TENSOR);
    let victim = s.nodes[2].2;
    let victim_owner = s.nodes[2].0.account_id();
    // Epoch A: victim left out -> 1 penalty.
    let others = |chain: &Chain| -> Vec<(u32, u128)> {
        chain
            .state
            .subnet_nodes(s.id)
            .filter(|n| n.id != victim)
            .map(|n| (n.id, 3))
            .collect()
    };
    let round = |chain: &mut Chain, scores: Vec<(u32, u128)>| {
        let e = chain.epoch();
        consensus_round(chain, &s, scores, |_| true);
        chain.run_to_epoch(e + 1);
    };
    let scores = others(&chain);
    round(&mut chain, scores);
    assert_eq!(chain.state.subnet_node(s.id, victim).unwrap().penalties, 1);
    assert!(chain.events().iter().any(|e| matches!(e,
        Event::PenaltyAdded { node, reason: PenaltyReason::NotScored, .. } if *node == victim)));
    // Epoch B: scored zero -> 2 penalties.
    let mut scores = others(&chain);
    scores.push((victim, 0));
    scores.sort();
    round(&mut chain, scores);
    assert_eq!(chain.state.subnet_node(s.id, victim).unwrap().penalties, 2);
    // Epoch C: positive score clears one.
    let mut scores = others(&chain);
    scores.push((victim, 1));
    scores.sort();
    round(&mut chain, scores);
    assert_eq!(chain.state.subnet_node(s.id, victim).unwrap().penalties, 1);
    assert!(chain.events().contains(&Event::PenaltyCleared {
        subnet: s.id,
        node: victim,
        penalties: 1
    }));
    // Two more misses: at 3 penalties the node is removed, stake unbonding.
    let scores = others(&chain);
    round(&mut chain, scores);
    let stake = chain.state.subnet_node(s.id, victim).unwrap().stake;
    let scores = others(&chain);
    round(&mut chain, scores);
    assert!(chain.state.subnet_node(s.id, victim).is_none());
    assert!(chain.events().contains(&Event::NodeRemoved {
        subnet: s.id,
        node: victim,
        reason: hypertensor_runtime::RemovalReason::Penalties
    }));
    let unbonding = chain.state.unbonding(&victim_owner);
    assert_eq!(unbonding.iter().map(|e| e.amount).sum::<u128>(), stake);
}

#[test]
fn two_subnets_split_the_vault_by_stake() {
    let mut chain = Chain::new();
    let a = active_subnet(&mut chain, "a", 3, 0, 1000 * TENSOR);
    let b = active_subnet(&mut chain, "b", 3, 0, 3000 * TENSOR);
    let epoch = chain.epoch();
    for s in [&a, &b] {
        let scores = s.nodes.iter().map(|(_, _, n)| (*n, 1)).collect();
        consensus_round(&mut chain, s, scores, |_| true);
    }
    while chain.state.height() + 1 < (epoch + 1) * chain.params().epoch_length {
        chain.block(vec![]);
    }
    let vault = chain.state.vault();
    chain.block(vec![]);
    // Weights 0.25 / 0.75, cap 0.5: b is capped at 0.5, a gets the other 0.5.
    let allocations: Vec<(u32, u128)> = chain
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::SubnetAllocation { subnet, amount, .. } => Some((*subnet, *amount)),
            _ => None,
        })
        .collect();
    assert_eq!(allocations, vec![(b.id, vault / 2), (a.id, vault / 2)]);
}
