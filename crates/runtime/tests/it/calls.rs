//! Every call's success and every named call error.

use hypertensor_primitives::{Keypair, TENSOR};
use hypertensor_runtime::{
    Call, Error, Event, GenesisConfig, GenesisNode, GenesisSubnet, NodeClass, NodeId, Params,
    SubnetId, SubnetState,
};

use crate::common::{Chain, active_subnet, fails, id, key, peer, refused};

fn register(chain: &mut Chain, owner: &Keypair, name: &str) -> SubnetId {
    chain
        .call(
            owner,
            Call::RegisterSubnet {
                name: name.to_string(),
                model: "org/model".to_string(),
                min_stake: 100 * TENSOR,
                max_stake: 1000 * TENSOR,
                initial_validators: vec![],
            },
        )
        .unwrap();
    chain.state.subnets().find(|s| s.name == name).unwrap().id
}

fn register_node(chain: &mut Chain, owner: &Keypair, subnet: SubnetId, tag: &str) -> NodeId {
    chain
        .call(
            owner,
            Call::RegisterSubnetNode {
                subnet,
                hotkey: id(&format!("hot-{tag}")),
                peer_id: peer(tag),
                client_peer_id: None,
                stake: 200 * TENSOR,
            },
        )
        .unwrap();
    chain.state.subnet(subnet).unwrap().next_node_id - 1
}

#[test]
fn transfer_moves_balance_and_pays_fee() {
    let mut chain = Chain::new();
    let (alice, bob) = (key("alice"), key("bob"));
    let before = chain.state.account(&alice.account_id());
    let author_before = chain.state.account(&chain.author.account_id()).free;
    chain
        .call(
            &alice,
            Call::Transfer {
                to: bob.account_id(),
                amount: 5 * TENSOR,
            },
        )
        .unwrap();
    let fee = chain.params().tx_base_fee;
    let after = chain.state.account(&alice.account_id());
    assert_eq!(after.free, before.free - 5 * TENSOR - fee);
    assert_eq!(after.nonce, 1);
    assert_eq!(
        chain.state.account(&bob.account_id()).free,
        1_000_005 * TENSOR
    );
    let events = chain.events();
    assert!(events.contains(&Event::Transfer {
        from: alice.account_id(),
        to: bob.account_id(),
        amount: 5 * TENSOR
    }));
    assert!(events.contains(&Event::FeePaid {
        who: alice.account_id(),
        amount: fee,
        author_share: fee / 10
    }));
    // The author got 10% of the fee and 10% of the block subsidy.
    let subsidy = chain.params().initial_block_subsidy();
    assert_eq!(
        chain.state.account(&chain.author.account_id()).free,
        author_before + fee / 10 + subsidy / 10
    );
}

#[test]
fn transfer_errors() {
    let mut chain = Chain::new();
    let alice = key("alice");
    assert_eq!(
        refused(
            &chain,
            &alice,
            Call::Transfer {
                to: id("bob"),
                amount: 0
            }
        ),
        Error::ZeroAmount
    );
    assert_eq!(
        fails(
            &mut chain,
            &alice,
            Call::Transfer {
                to: alice.account_id(),
                amount: 1
            }
        ),
        Error::TransferToSelf
    );
    let free = chain.state.account(&alice.account_id()).free - chain.params().tx_base_fee;
    assert_eq!(
        fails(
            &mut chain,
            &alice,
            Call::Transfer {
                to: id("bob"),
                amount: free + 1
            }
        ),
        Error::InsufficientBalance {
            needed: free + 1,
            free
        }
    );
}

#[test]
fn register_subnet_pays_the_treasury() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let id = register(&mut chain, &alice, "llama");
    let s = chain.state.subnet(id).unwrap();
    assert_eq!(
        (s.owner, s.state, s.id),
        (alice.account_id(), SubnetState::Registered, 1)
    );
    assert_eq!(chain.state.treasury(), 100 * TENSOR);
    assert!(chain.events().contains(&Event::SubnetRegistered {
        subnet: 1,
        owner: alice.account_id(),
        name: "llama".into(),
        fee: 100 * TENSOR
    }));
}

#[test]
fn register_subnet_errors() {
    let mut chain = Chain::with_params(Params {
        max_subnets: 1,
        ..Params::devnet()
    });
    let alice = key("alice");
    let call = |name: &str, model: &str, min: u128, max: u128, n: usize| Call::RegisterSubnet {
        name: name.into(),
        model: model.into(),
        min_stake: min,
        max_stake: max,
        initial_validators: (0..n).map(|i| peer(&i.to_string())).collect(),
    };
    let t = TENSOR;
    assert!(matches!(
        refused(&chain, &alice, call("", "m", 100 * t, 100 * t, 0)),
        Error::InvalidSubnetName { .. }
    ));
    let long = "x".repeat(65);
    assert!(matches!(
        refused(&chain, &alice, call(&long, "m", 100 * t, 100 * t, 0)),
        Error::InvalidSubnetName { .. }
    ));
    assert!(matches!(
        refused(&chain, &alice, call("a\nb", "m", 100 * t, 100 * t, 0)),
        Error::InvalidSubnetName { .. }
    ));
    assert!(matches!(
        refused(&chain, &alice, call("n", "", 100 * t, 100 * t, 0)),
        Error::InvalidModel { .. }
    ));
    assert!(matches!(
        refused(&chain, &alice, call("n", "m", 99 * t, 100 * t, 0)),
        Error::InvalidStakeBounds { .. }
    ));
    assert!(matches!(
        refused(&chain, &alice, call("n", "m", 200 * t, 100 * t, 0)),
        Error::InvalidStakeBounds { .. }
    ));
    assert!(matches!(
        refused(&chain, &alice, call("n", "m", 100 * t, 10_001 * t, 0)),
        Error::InvalidStakeBounds { .. }
    ));
    assert_eq!(
        refused(&chain, &alice, call("n", "m", 100 * t, 100 * t, 4)),
        Error::TooManyInitialValidators { count: 4, max: 3 }
    );
    let mut dup = call("n", "m", 100 * t, 100 * t, 1);
    if let Call::RegisterSubnet {
        initial_validators, ..
    } = &mut dup
    {
        initial_validators.push(peer("0"));
    }
    assert_eq!(
        refused(&chain, &alice, dup),
        Error::DuplicateInitialValidator { peer_id: peer("0") }
    );
    // A poor account cannot pay the fee.
    chain
        .call(
            &alice,
            Call::Transfer {
                to: id("poor"),
                amount: 50 * t,
            },
        )
        .unwrap();
    let poor = key("poor");
    let free = 50 * t - chain.params().tx_base_fee;
    assert_eq!(
        fails(&mut chain, &poor, call("n", "m", 100 * t, 100 * t, 0)),
        Error::InsufficientBalance {
            needed: 100 * t,
            free
        }
    );
    register(&mut chain, &alice, "taken");
    assert_eq!(
        fails(
            &mut chain,
            &key("bob"),
            call("other", "m", 100 * t, 100 * t, 0)
        ),
        Error::TooManySubnets { max: 1 }
    );
    let mut chain = Chain::new();
    register(&mut chain, &alice, "taken");
    assert_eq!(
        fails(
            &mut chain,
            &key("bob"),
            call("taken", "m", 100 * t, 100 * t, 0)
        ),
        Error::SubnetNameTaken {
            name: "taken".into()
        }
    );
}

#[test]
fn register_and_activate_nodes() {
    let mut chain = Chain::new();
    let (alice, bob) = (key("alice"), key("bob"));
    let subnet = register(&mut chain, &alice, "s");
    let before = chain.state.account(&bob.account_id()).free;
    let node = register_node(&mut chain, &bob, subnet, "b1");
    let n = chain.state.subnet_node(subnet, node).unwrap().clone();
    assert_eq!(
        (n.stake, n.class, n.start_epoch),
        (200 * TENSOR, NodeClass::Registered, 1)
    );
    assert_eq!(
        chain.state.account(&bob.account_id()).free,
        before - 200 * TENSOR - chain.params().tx_base_fee
    );
    assert!(
        chain
            .events()
            .iter()
            .any(|e| matches!(e, Event::NodeRegistered { node: 1, .. }))
    );
    // Not before the next epoch.
    assert_eq!(
        fails(&mut chain, &bob, Call::ActivateSubnetNode { subnet, node }),
        Error::ActivationTooEarly {
            start_epoch: 1,
            current: 0
        }
    );
    chain.run_to_epoch(1);
    chain
        .call(
            &bob,
            Call::Transfer {
                to: id("hot-b1"),
                amount: TENSOR,
            },
        )
        .unwrap();
    // The hotkey may activate too.
    chain
        .call(&key("hot-b1"), Call::ActivateSubnetNode { subnet, node })
        .unwrap();
    assert_eq!(
        chain.state.subnet_node(subnet, node).unwrap().class,
        NodeClass::Idle
    );
    assert!(chain.events().contains(&Event::NodeActivated {
        subnet,
        node,
        class: NodeClass::Idle
    }));
    assert_eq!(
        fails(&mut chain, &bob, Call::ActivateSubnetNode { subnet, node }),
        Error::NodeAlreadyActivated { node }
    );
    assert_eq!(
        fails(
            &mut chain,
            &key("charlie"),
            Call::ActivateSubnetNode { subnet, node }
        ),
        Error::NotNodeOwner { node }
    );
    assert_eq!(
        fails(
            &mut chain,
            &bob,
            Call::ActivateSubnetNode { subnet, node: 99 }
        ),
        Error::UnknownNode { subnet, node: 99 }
    );
    assert_eq!(
        fails(
            &mut chain,
            &bob,
            Call::ActivateSubnetNode { subnet: 9, node }
        ),
        Error::UnknownSubnet { subnet: 9 }
    );
}

#[test]
fn initial_validators_start_as_validators() {
    let mut chain = Chain::new();
    let alice = key("alice");
    chain
        .call(
            &alice,
            Call::RegisterSubnet {
                name: "s".into(),
                model: "m".into(),
                min_stake: 100 * TENSOR,
                max_stake: 1000 * TENSOR,
                initial_validators: vec![peer("v")],
            },
        )
        .unwrap();
    let v = register_node(&mut chain, &key("bob"), 1, "v");
    let other = register_node(&mut chain, &key("charlie"), 1, "o");
    chain.run_to_epoch(1);
    chain
        .call(&key("bob"), Call::ActivateSubnetNode { subnet: 1, node: v })
        .unwrap();
    chain
        .call(
            &key("charlie"),
            Call::ActivateSubnetNode {
                subnet: 1,
                node: other,
            },
        )
        .unwrap();
    assert_eq!(
        chain.state.subnet_node(1, v).unwrap().class,
        NodeClass::Validator
    );
    assert_eq!(
        chain.state.subnet_node(1, other).unwrap().class,
        NodeClass::Idle
    );
}

#[test]
fn register_node_errors() {
    let mut chain = Chain::with_params(Params {
        epoch_length: 10,
        max_nodes_per_subnet: 2,
        max_initial_validators: 2,
        ..Params::devnet()
    });
    let (alice, bob) = (key("alice"), key("bob"));
    let subnet = register(&mut chain, &alice, "s");
    let node = |hot: &str, p: &str, client: Option<&str>, stake: u128| Call::RegisterSubnetNode {
        subnet,
        hotkey: id(hot),
        peer_id: peer(p),
        client_peer_id: client.map(peer),
        stake,
    };
    assert_eq!(
        fails(
            &mut chain,
            &bob,
            Call::RegisterSubnetNode {
                subnet: 7,
                hotkey: id("h"),
                peer_id: peer("p"),
                client_peer_id: None,
                stake: 200 * TENSOR
            }
        ),
        Error::UnknownSubnet { subnet: 7 }
    );
    assert_eq!(
        fails(&mut chain, &bob, node("h", "p", None, 99 * TENSOR)),
        Error::StakeOutOfBounds {
            stake: 99 * TENSOR,
            min: 100 * TENSOR,
            max: 1000 * TENSOR
        }
    );
    assert_eq!(
        fails(&mut chain, &bob, node("h", "p", None, 1001 * TENSOR)),
        Error::StakeOutOfBounds {
            stake: 1001 * TENSOR,
            min: 100 * TENSOR,
            max: 1000 * TENSOR
        }
    );
    chain
        .call(
            &bob,
            Call::Transfer {
                to: id("poor"),
                amount: 150 * TENSOR,
            },
        )
        .unwrap();
    let free = 150 * TENSOR - chain.params().tx_base_fee;
    assert_eq!(
        fails(&mut chain, &key("poor"), node("h", "p", None, 200 * TENSOR)),
        Error::InsufficientBalance {
            needed: 200 * TENSOR,
            free
        }
    );
    chain
        .call(&bob, node("h1", "p1", Some("c1"), 200 * TENSOR))
        .unwrap();
    assert_eq!(
        fails(&mut chain, &bob, node("h2", "p1", None, 200 * TENSOR)),
        Error::PeerIdTaken {
            peer_id: peer("p1")
        }
    );
    assert_eq!(
        fails(&mut chain, &bob, node("h2", "p2", Some("c1"), 200 * TENSOR)),
        Error::PeerIdTaken {
            peer_id: peer("c1")
        }
    );
    assert_eq!(
        fails(&mut chain, &bob, node("h1", "p2", None, 200 * TENSOR)),
        Error::HotkeyTaken { node: 1 }
    );
    chain
        .call(&bob, node("h2", "p2", None, 200 * TENSOR))
        .unwrap();
    assert_eq!(
        fails(&mut chain, &bob, node("h3", "p3", None, 200 * TENSOR)),
        Error::SubnetFull { subnet, max: 2 }
    );
}

#[test]
fn activate_subnet_success_and_errors() {
    let mut chain = Chain::new();
    let (alice, bob) = (key("alice"), key("bob"));
    let subnet = register(&mut chain, &alice, "s");
    assert_eq!(
        fails(&mut chain, &alice, Call::ActivateSubnet { subnet: 5 }),
        Error::UnknownSubnet { subnet: 5 }
    );
    assert_eq!(
        fails(&mut chain, &bob, Call::ActivateSubnet { subnet }),
        Error::NotSubnetOwner { subnet }
    );
    let nodes: Vec<NodeId> = ["a", "b", "c"]
        .iter()
        .map(|t| register_node(&mut chain, &bob, subnet, t))
        .collect();
    chain.run_to_epoch(1);
    for n in &nodes[..2] {
        chain
            .call(&bob, Call::ActivateSubnetNode { subnet, node: *n })
            .unwrap();
    }
    assert_eq!(
        fails(&mut chain, &alice, Call::ActivateSubnet { subnet }),
        Error::NotEnoughNodes {
            subnet,
            have: 2,
            need: 3
        }
    );
    chain
        .call(
            &bob,
            Call::ActivateSubnetNode {
                subnet,
                node: nodes[2],
            },
        )
        .unwrap();
    chain.call(&alice, Call::ActivateSubnet { subnet }).unwrap();
    let s = chain.state.subnet(subnet).unwrap();
    assert_eq!((s.state, s.activated_epoch), (SubnetState::Active, Some(1)));
    assert!(chain.events().contains(&Event::SubnetActivated { subnet }));
    assert_eq!(
        fails(&mut chain, &alice, Call::ActivateSubnet { subnet }),
        Error::SubnetAlreadyActive { subnet }
    );
}

#[test]
fn stake_calls_success_and_errors() {
    let mut chain = Chain::new();
    let (alice, bob) = (key("alice"), key("bob"));
    let subnet = register(&mut chain, &alice, "s");
    let node = register_node(&mut chain, &bob, subnet, "n");
    chain
        .call(
            &bob,
            Call::AddStake {
                subnet,
                node,
                amount: 300 * TENSOR,
            },
        )
        .unwrap();
    assert_eq!(
        chain.state.subnet_node(subnet, node).unwrap().stake,
        500 * TENSOR
    );
    assert!(chain.events().contains(&Event::StakeAdded {
        subnet,
        node,
        amount: 300 * TENSOR
    }));
    assert_eq!(
        refused(
            &chain,
            &bob,
            Call::AddStake {
                subnet,
                node,
                amount: 0
            }
        ),
        Error::ZeroAmount
    );
    assert_eq!(
        refused(
            &chain,
            &bob,
            Call::RemoveStake {
                subnet,
                node,
                amount: 0
            }
        ),
        Error::ZeroAmount
    );
    assert_eq!(
        fails(
            &mut chain,
            &alice,
            Call::AddStake {
                subnet,
                node,
                amount: TENSOR
            }
        ),
        Error::NotNodeOwner { node }
    );
    assert_eq!(
        fails(
            &mut chain,
            &bob,
            Call::AddStake {
                subnet,
                node: 42,
                amount: TENSOR
            }
        ),
        Error::UnknownNode { subnet, node: 42 }
    );
    assert_eq!(
        fails(
            &mut chain,
            &bob,
            Call::AddStake {
                subnet: 42,
                node,
                amount: TENSOR
            }
        ),
        Error::UnknownSubnet { subnet: 42 }
    );
    assert_eq!(
        fails(
            &mut chain,
            &bob,
            Call::AddStake {
                subnet,
                node,
                amount: 501 * TENSOR
            }
        ),
        Error::StakeOutOfBounds {
            stake: 1001 * TENSOR,
            min: 100 * TENSOR,
            max: 1000 * TENSOR
        }
    );
    // A second node owned by a poor account.
    chain
        .call(
            &bob,
            Call::Transfer {
                to: id("poor"),
                amount: 201 * TENSOR,
            },
        )
        .unwrap();
    let poor = key("poor");
    let poor_node = register_node(&mut chain, &poor, subnet, "poor");
    let free = chain.state.account(&poor.account_id()).free - chain.params().tx_base_fee;
    assert_eq!(
        fails(
            &mut chain,
            &poor,
            Call::AddStake {
                subnet,
                node: poor_node,
                amount: 2 * TENSOR
            }
        ),
        Error::InsufficientBalance {
            needed: 2 * TENSOR,
            free
        }
    );

    chain
        .call(
            &bob,
            Call::RemoveStake {
                subnet,
                node,
                amount: 400 * TENSOR,
            },
        )
        .unwrap();
    assert_eq!(
        chain.state.subnet_node(subnet, node).unwrap().stake,
        100 * TENSOR
    );
    let unbonding = chain.state.unbonding(&bob.account_id());
    assert_eq!(unbonding.len(), 1);
    let claimable = chain.epoch() + chain.params().unbonding_epochs;
    assert_eq!(
        (unbonding[0].claimable_epoch, unbonding[0].amount),
        (claimable, 400 * TENSOR)
    );
    assert_eq!(
        fails(
            &mut chain,
            &bob,
            Call::RemoveStake {
                subnet,
                node,
                amount: 1
            }
        ),
        Error::StakeBelowMinimum {
            remaining: 100 * TENSOR - 1,
            min: 100 * TENSOR
        }
    );
    assert_eq!(
        fails(
            &mut chain,
            &bob,
            Call::RemoveStake {
                subnet,
                node,
                amount: 101 * TENSOR
            }
        ),
        Error::StakeBelowMinimum {
            remaining: 0,
            min: 100 * TENSOR
        }
    );
    assert_eq!(
        fails(
            &mut chain,
            &alice,
            Call::RemoveStake {
                subnet,
                node,
                amount: 1
            }
        ),
        Error::NotNodeOwner { node }
    );

    // Claim: nothing before the claimable epoch, everything from it.
    chain.run_to_epoch(claimable - 1);
    assert_eq!(
        fails(&mut chain, &bob, Call::ClaimUnbonded),
        Error::NothingToClaim
    );
    chain.run_to_epoch(claimable);
    let before = chain.state.account(&bob.account_id()).free;
    chain.call(&bob, Call::ClaimUnbonded).unwrap();
    assert_eq!(
        chain.state.account(&bob.account_id()).free,
        before + 400 * TENSOR - chain.params().tx_base_fee
    );
    // Only entries of later epochs remain (the never-activated registration
    // of the poor account is not bob's; bob's own node lapsed at epoch 4).
    let current = chain.epoch();
    assert!(
        chain
            .state
            .unbonding(&bob.account_id())
            .iter()
            .all(|e| e.claimable_epoch > current)
    );
    assert_eq!(
        fails(&mut chain, &bob, Call::ClaimUnbonded),
        Error::NothingToClaim
    );
}

#[test]
fn remove_subnet_node_unbonds_everything() {
    let mut chain = Chain::new();
    let (alice, bob) = (key("alice"), key("bob"));
    let subnet = register(&mut chain, &alice, "s");
    let node = register_node(&mut chain, &bob, subnet, "n");
    assert_eq!(
        fails(&mut chain, &alice, Call::RemoveSubnetNode { subnet, node }),
        Error::NotNodeOwner { node }
    );
    assert_eq!(
        fails(&mut chain, &bob, Call::RemoveSubnetNode { subnet, node: 3 }),
        Error::UnknownNode { subnet, node: 3 }
    );
    chain
        .call(&bob, Call::RemoveSubnetNode { subnet, node })
        .unwrap();
    assert!(chain.state.subnet_node(subnet, node).is_none());
    assert_eq!(
        chain.state.unbonding(&bob.account_id())[0].amount,
        200 * TENSOR
    );
    assert!(chain.events().contains(&Event::NodeRemoved {
        subnet,
        node,
        reason: hypertensor_runtime::RemovalReason::Voluntary
    }));
}

#[test]
fn propose_and_attest_success_is_free() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 0, 1000 * TENSOR);
    let epoch = chain.epoch();
    let elected = chain.state.elected_validator(s.id, epoch).unwrap().clone();
    let proposer = s.hotkey(elected.id);
    let before = chain.state.account(&proposer.account_id());
    let scores = vec![(s.nodes[0].2, 5), (s.nodes[1].2, 7), (s.nodes[2].2, 9)];
    chain
        .call(
            proposer,
            Call::ProposeAttestation {
                subnet: s.id,
                epoch,
                scores: scores.clone(),
            },
        )
        .unwrap();
    let after = chain.state.account(&proposer.account_id());
    assert_eq!((after.free, after.nonce), (before.free, before.nonce + 1));
    let record = chain.state.consensus_data(s.id, epoch).unwrap();
    assert_eq!(record.proposal.as_ref(), Some(&scores));
    assert!(record.attestations.contains(&elected.id));
    let other = s.nodes.iter().find(|(_, _, n)| *n != elected.id).unwrap();
    chain
        .call(
            &other.1,
            Call::Attest {
                subnet: s.id,
                epoch,
            },
        )
        .unwrap();
    assert_eq!(chain.state.account(&other.1.account_id()).free, TENSOR);
    assert!(chain.events().contains(&Event::Attested {
        subnet: s.id,
        epoch,
        node: other.2
    }));
}

#[test]
fn propose_errors() {
    // Long epochs: every failing call below takes a block.
    let mut chain = Chain::with_params(Params {
        epoch_length: 100,
        ..Params::devnet()
    });
    let s = active_subnet(&mut chain, "s", 3, 1, 1000 * TENSOR);
    let epoch = chain.epoch();
    let elected = chain.state.elected_validator(s.id, epoch).unwrap().id;
    let proposer = s.hotkey(elected).clone();
    let idle = s.nodes[3].2;
    let other = s
        .nodes
        .iter()
        .find(|(_, _, n)| *n != elected && *n != idle)
        .unwrap()
        .1
        .clone();
    let propose = |subnet, epoch, scores: Vec<(NodeId, u128)>| Call::ProposeAttestation {
        subnet,
        epoch,
        scores,
    };

    assert_eq!(
        refused(
            &chain,
            &proposer,
            propose(s.id, epoch, vec![(2, 1), (1, 1)])
        ),
        Error::ScoresNotSorted { index: 1 }
    );
    assert_eq!(
        refused(
            &chain,
            &proposer,
            propose(s.id, epoch, vec![(1, 1), (1, 1)])
        ),
        Error::ScoresNotSorted { index: 1 }
    );
    assert_eq!(
        refused(
            &chain,
            &proposer,
            propose(s.id, epoch, vec![(1, u128::MAX), (2, 1)])
        ),
        Error::ScoreSumOverflow
    );
    let too_many: Vec<(NodeId, u128)> = (0..257).map(|i| (i, 1)).collect();
    assert_eq!(
        refused(&chain, &proposer, propose(s.id, epoch, too_many)),
        Error::TooManyScores {
            count: 257,
            max: 256
        }
    );
    assert_eq!(
        fails(&mut chain, &proposer, propose(99, epoch, vec![])),
        Error::UnknownSubnet { subnet: 99 }
    );
    assert_eq!(
        fails(&mut chain, &proposer, propose(s.id, epoch + 1, vec![])),
        Error::WrongEpoch {
            given: epoch + 1,
            current: epoch
        }
    );
    assert_eq!(
        fails(&mut chain, &other, propose(s.id, epoch, vec![])),
        Error::NotElectedValidator { elected }
    );
    assert_eq!(
        fails(&mut chain, &proposer, propose(s.id, epoch, vec![(77, 1)])),
        Error::ScoredUnknownNode { node: 77 }
    );
    assert_eq!(
        fails(&mut chain, &proposer, propose(s.id, epoch, vec![(idle, 1)])),
        Error::ScoredIneligibleNode {
            node: idle,
            class: NodeClass::Idle
        }
    );
    // Attest before any proposal.
    assert_eq!(
        fails(
            &mut chain,
            &other,
            Call::Attest {
                subnet: s.id,
                epoch
            }
        ),
        Error::NoProposal
    );
    chain.call(&proposer, propose(s.id, epoch, vec![])).unwrap();
    assert_eq!(
        fails(&mut chain, &proposer, propose(s.id, epoch, vec![])),
        Error::AlreadyProposed
    );
    // Attest errors.
    assert_eq!(
        fails(
            &mut chain,
            &proposer,
            Call::Attest {
                subnet: s.id,
                epoch
            }
        ),
        Error::AlreadyAttested { node: elected }
    );
    assert_eq!(
        fails(
            &mut chain,
            &s.nodes[3].1,
            Call::Attest {
                subnet: s.id,
                epoch
            }
        ),
        Error::NotInValidatorSet
    );
    assert_eq!(
        fails(
            &mut chain,
            &key("alice"),
            Call::Attest {
                subnet: s.id,
                epoch
            }
        ),
        Error::NotInValidatorSet
    );
    assert_eq!(
        fails(
            &mut chain,
            &other,
            Call::Attest {
                subnet: s.id,
                epoch: epoch - 1
            }
        ),
        Error::WrongEpoch {
            given: epoch - 1,
            current: epoch
        }
    );
    chain
        .call(
            &other,
            Call::Attest {
                subnet: s.id,
                epoch,
            },
        )
        .unwrap();
    assert_eq!(
        fails(
            &mut chain,
            &other,
            Call::Attest {
                subnet: s.id,
                epoch
            }
        ),
        Error::AlreadyAttested {
            node: chain
                .state
                .subnet(s.id)
                .unwrap()
                .node_by_hotkey(&other.account_id())
                .unwrap()
                .id
        }
    );
    // A subnet that is not active.
    let bob = key("bob");
    let inactive = register(&mut chain, &bob, "inactive");
    assert_eq!(
        fails(&mut chain, &proposer, propose(inactive, epoch, vec![])),
        Error::SubnetNotActive { subnet: inactive }
    );
    assert_eq!(
        fails(
            &mut chain,
            &proposer,
            Call::Attest {
                subnet: inactive,
                epoch
            }
        ),
        Error::SubnetNotActive { subnet: inactive }
    );
}

#[test]
fn failed_consensus_calls_pay_the_fee() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 0, 1000 * TENSOR);
    let hot = &s.nodes[0].1;
    let before = chain.state.account(&hot.account_id()).free;
    let epoch = chain.epoch();
    chain
        .call(
            hot,
            Call::Attest {
                subnet: s.id,
                epoch,
            },
        )
        .unwrap_err();
    assert_eq!(
        chain.state.account(&hot.account_id()).free,
        before - chain.params().tx_base_fee
    );
}

#[test]
fn no_elected_validator_without_validator_class_nodes() {
    let alice = key("alice");
    let mut config = GenesisConfig::dev();
    config.params.epoch_length = 10;
    config.accounts.push(hypertensor_runtime::GenesisAccount {
        account: id("hot-0"),
        balance: TENSOR,
    });
    config.subnets.push(GenesisSubnet {
        name: "idle".into(),
        model: "m".into(),
        owner: alice.account_id(),
        min_stake: 100 * TENSOR,
        max_stake: 1000 * TENSOR,
        active: true,
        nodes: (0..3)
            .map(|i| GenesisNode {
                owner: alice.account_id(),
                hotkey: id(&format!("hot-{i}")),
                peer_id: peer(&i.to_string()),
                client_peer_id: None,
                stake: 100 * TENSOR,
                class: NodeClass::Idle,
            })
            .collect(),
    });
    let mut chain = Chain::from_config(&config);
    assert!(chain.state.consensus_data(1, 0).is_none());
    let hot = key("hot-0");
    assert_eq!(
        fails(
            &mut chain,
            &hot,
            Call::ProposeAttestation {
                subnet: 1,
                epoch: 0,
                scores: vec![]
            }
        ),
        Error::NoElectedValidator {
            subnet: 1,
            epoch: 0
        }
    );
    assert_eq!(
        fails(
            &mut chain,
            &hot,
            Call::Attest {
                subnet: 1,
                epoch: 0
            }
        ),
        Error::NoElectedValidator {
            subnet: 1,
            epoch: 0
        }
    );
}
