//! The node lifecycle across epochs (SPEC §3.3): Registered -> Idle ->
//! Included -> Validator, lapses, unbonding.

use hypertensor_primitives::TENSOR;
use hypertensor_runtime::{Call, Event, NodeClass, RemovalReason};

use crate::common::{
    Chain, active_subnet, consensus_round, id, key, peer, scores_for_scored_nodes,
};

#[test]
fn idle_node_is_promoted_to_included_then_validator_and_paid() {
    let mut chain = Chain::new();
    // 3 initial validators and one ordinary node, activated in epoch 1
    // (class_start_epoch 2); the helper returns at the start of epoch 2.
    let s = active_subnet(&mut chain, "s", 3, 1, 1000 * TENSOR);
    let newcomer = s.nodes[3].2;
    let owner = s.nodes[3].0.account_id();
    assert_eq!(chain.epoch(), 2);
    let class = |chain: &Chain| chain.state.subnet_node(s.id, newcomer).unwrap().class;
    let mut history = Vec::new();
    let mut first_paid = None;
    for _ in 2..8 {
        let epoch = chain.epoch();
        history.push((epoch, class(&chain)));
        let scores = scores_for_scored_nodes(&chain, s.id);
        consensus_round(&mut chain, &s, scores, |_| true);
        let before = chain.state.account(&owner).free;
        chain.run_to_epoch(epoch + 1);
        if first_paid.is_none() && chain.state.account(&owner).free > before {
            first_paid = Some(epoch);
        }
    }
    history.push((chain.epoch(), class(&chain)));
    use NodeClass::*;
    assert_eq!(
        history,
        vec![
            (2, Idle),     // in consensus: progress 1
            (3, Idle),     // progress 2 -> promoted at the start of 4
            (4, Included), // scored: 1
            (5, Included), // scored: 2 -> promoted at the start of 6
            (6, Validator),
            (7, Validator),
            (8, Validator),
        ]
    );
    // Paid from its first epoch as Included, not before.
    assert_eq!(first_paid, Some(4));
    assert!(
        chain
            .state
            .consensus_data(s.id, 7)
            .unwrap()
            .snapshot
            .contains(&newcomer)
    );
}

#[test]
fn included_streak_resets_without_a_positive_score() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 1, 1000 * TENSOR);
    let newcomer = s.nodes[3].2;
    for _ in 2..4 {
        let e = chain.epoch();
        let scores = scores_for_scored_nodes(&chain, s.id);
        consensus_round(&mut chain, &s, scores, |_| true);
        chain.run_to_epoch(e + 1);
    }
    assert_eq!(
        chain.state.subnet_node(s.id, newcomer).unwrap().class,
        NodeClass::Included
    );
    // Epoch 4: scored. Epoch 5: left out (streak reset). Epochs 6, 7: scored.
    for (skip, expected_after) in [
        (false, NodeClass::Included),
        (true, NodeClass::Included),
        (false, NodeClass::Included),
        (false, NodeClass::Validator),
    ] {
        let e = chain.epoch();
        let mut scores = scores_for_scored_nodes(&chain, s.id);
        if skip {
            scores.retain(|(n, _)| *n != newcomer);
        }
        consensus_round(&mut chain, &s, scores, |_| true);
        chain.run_to_epoch(e + 1);
        assert_eq!(
            chain.state.subnet_node(s.id, newcomer).unwrap().class,
            expected_after,
            "after epoch {e}"
        );
    }
}

#[test]
fn unactivated_registration_lapses_into_unbonding() {
    let mut chain = Chain::new();
    let (alice, bob) = (key("alice"), key("bob"));
    chain
        .call(
            &alice,
            Call::RegisterSubnet {
                name: "s".into(),
                model: "m".into(),
                min_stake: 100 * TENSOR,
                max_stake: 1000 * TENSOR,
                initial_validators: vec![],
            },
        )
        .unwrap();
    chain
        .call(
            &bob,
            Call::RegisterSubnetNode {
                subnet: 1,
                hotkey: id("hot"),
                peer_id: peer("p"),
                client_peer_id: None,
                stake: 300 * TENSOR,
            },
        )
        .unwrap();
    // start_epoch 1, grace 2: activation possible in epochs 1..=3.
    chain.run_to_epoch(3);
    assert!(chain.state.subnet_node(1, 1).is_some());
    chain.run_to_epoch(4);
    assert!(chain.state.subnet_node(1, 1).is_none());
    assert!(chain.events().contains(&Event::NodeRemoved {
        subnet: 1,
        node: 1,
        reason: RemovalReason::RegistrationLapsed
    }));
    let ledger = chain.state.unbonding(&bob.account_id()).to_vec();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].claimable_epoch, ledger[0].amount),
        (4 + 4, 300 * TENSOR)
    );
    chain.run_to_epoch(8);
    let free = chain.state.account(&bob.account_id()).free;
    chain.call(&bob, Call::ClaimUnbonded).unwrap();
    assert_eq!(
        chain.state.account(&bob.account_id()).free,
        free + 300 * TENSOR - chain.params().tx_base_fee
    );
}

#[test]
fn activation_on_the_last_allowed_epoch_succeeds() {
    let mut chain = Chain::new();
    let (alice, bob) = (key("alice"), key("bob"));
    chain
        .call(
            &alice,
            Call::RegisterSubnet {
                name: "s".into(),
                model: "m".into(),
                min_stake: 100 * TENSOR,
                max_stake: 1000 * TENSOR,
                initial_validators: vec![],
            },
        )
        .unwrap();
    chain
        .call(
            &bob,
            Call::RegisterSubnetNode {
                subnet: 1,
                hotkey: id("hot"),
                peer_id: peer("p"),
                client_peer_id: None,
                stake: 300 * TENSOR,
            },
        )
        .unwrap();
    chain.run_to_epoch(3);
    chain
        .call(&bob, Call::ActivateSubnetNode { subnet: 1, node: 1 })
        .unwrap();
    chain.run_to_epoch(5);
    assert_eq!(
        chain.state.subnet_node(1, 1).unwrap().class,
        NodeClass::Idle
    );
}

#[test]
fn elections_follow_the_parent_hash_and_only_pick_validators() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 2, 1000 * TENSOR);
    let mut elected = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let e = chain.epoch();
        let record = chain.state.consensus_data(s.id, e).unwrap().clone();
        // Snapshot: exactly the Validator-class nodes, ascending.
        let validators: Vec<u32> = chain
            .state
            .subnet_nodes(s.id)
            .filter(|n| n.class == NodeClass::Validator)
            .map(|n| n.id)
            .collect();
        assert_eq!(record.snapshot, validators);
        assert!(record.snapshot.contains(&record.validator));
        elected.insert(record.validator);
        let scores = scores_for_scored_nodes(&chain, s.id);
        consensus_round(&mut chain, &s, scores, |_| true);
        chain.run_to_epoch(e + 1);
    }
    // Over 12 epochs the election visits more than one validator.
    assert!(elected.len() > 1, "{elected:?}");
    // Old consensus data is pruned to the history window.
    let keep = chain.params().consensus_history_epochs;
    assert!(
        chain
            .state
            .consensus_data(s.id, chain.epoch() - keep - 1)
            .is_none()
    );
    assert!(
        chain
            .state
            .consensus_data(s.id, chain.epoch() - keep)
            .is_some()
    );
}
