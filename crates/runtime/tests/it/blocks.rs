//! Blocks, extrinsic validity, genesis, state root and read accessors.

use hypertensor_primitives::{H256, Keypair, Signature, TENSOR};
use hypertensor_runtime::{
    Applied, BlockBuilder, Call, Error, Event, GenesisConfig, NodeClass, Params, SignatureCheck,
    State, apply_block,
};

use crate::common::{Chain, active_subnet, id, key};

fn transfer(amount: u128) -> Call {
    Call::Transfer {
        to: id("bob"),
        amount,
    }
}

/// A valid block on top of `chain` with one transfer by alice.
fn valid_block(chain: &Chain) -> hypertensor_runtime::Block {
    let mut b = BlockBuilder::new(&chain.state, id("author"), chain.timestamp + 1000).unwrap();
    b.push(chain.sign(&key("alice"), 0, transfer(TENSOR)))
        .unwrap();
    b.finish().block
}

#[test]
fn apply_block_refuses_bad_blocks_and_keeps_the_state() {
    let chain = Chain::new();
    let before = chain.state.clone();
    let good = valid_block(&chain);
    let check = |block: &hypertensor_runtime::Block| {
        let e = apply_block(&chain.state, block).unwrap_err();
        assert_eq!(chain.state, before);
        e
    };

    let mut b = good.clone();
    b.header.height = 5;
    assert_eq!(
        check(&b),
        Error::WrongHeight {
            expected: 1,
            got: 5
        }
    );

    let mut b = good.clone();
    b.header.parent_hash = H256([1; 32]);
    assert!(matches!(check(&b), Error::WrongParent { .. }));

    let mut b = good.clone();
    b.extrinsics.clear();
    assert!(matches!(check(&b), Error::ExtrinsicsRootMismatch { .. }));

    let mut b = good.clone();
    b.header.state_root = H256([2; 32]);
    assert!(matches!(check(&b), Error::StateRootMismatch { .. }));

    let mut b = good.clone();
    b.header.author = id("someone-else"); // changes who is paid, hence the root
    assert!(matches!(check(&b), Error::StateRootMismatch { .. }));

    // A forged signature inside a block makes the block invalid.
    let mut b = good.clone();
    b.extrinsics[0].call = transfer(2 * TENSOR);
    b.header.extrinsics_root = hypertensor_runtime::extrinsics_root(&b.extrinsics);
    assert_eq!(
        check(&b),
        Error::InvalidExtrinsic {
            index: 0,
            reason: Box::new(Error::BadSignature)
        }
    );

    // The good block applies.
    let (state, _) = apply_block(&chain.state, &good).unwrap();
    assert_eq!(state.best_hash(), good.hash());
    assert_eq!(state.height(), 1);

    // A timestamp before the parent's.
    let mut later = Chain::new();
    later.block(vec![]);
    let err = BlockBuilder::new(&later.state, id("author"), later.timestamp - 1).unwrap_err();
    assert_eq!(
        err,
        Error::TimestampBeforeParent {
            parent: later.timestamp,
            got: later.timestamp - 1
        }
    );
}

#[test]
fn transaction_validity_errors() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let genesis = chain.state.genesis_hash();

    // Bad signature: tampered call, wrong network, wrong signer.
    let mut xt = chain.sign(&alice, 0, transfer(TENSOR));
    xt.call = transfer(TENSOR + 1);
    assert_eq!(
        chain.state.validate_extrinsic(&xt),
        Err(Error::BadSignature)
    );
    let other = hypertensor_runtime::Extrinsic::sign(&alice, 0, transfer(TENSOR), &H256([9; 32]));
    assert_eq!(
        chain.state.validate_extrinsic(&other),
        Err(Error::BadSignature)
    );
    let mut xt = chain.sign(&alice, 0, transfer(TENSOR));
    xt.signature = Signature([0; 64]);
    assert_eq!(
        chain.state.validate_extrinsic(&xt),
        Err(Error::BadSignature)
    );

    // Nonces.
    let ok = chain.sign(&alice, 0, transfer(TENSOR));
    let v = chain.state.validate_extrinsic(&ok).unwrap();
    assert!(v.ready);
    assert_eq!((v.account_nonce, v.fee), (0, chain.params().tx_base_fee));
    let future = chain.sign(&alice, 3, transfer(TENSOR));
    assert!(!chain.state.validate_extrinsic(&future).unwrap().ready);
    let far = chain.sign(&alice, 65, transfer(TENSOR));
    assert_eq!(
        chain.state.validate_extrinsic(&far),
        Err(Error::FutureNonce {
            expected: 0,
            got: 65
        })
    );
    let mut b = BlockBuilder::new(&chain.state, id("author"), 1).unwrap();
    assert_eq!(
        b.push(future),
        Err(Error::FutureNonce {
            expected: 0,
            got: 3
        })
    );
    chain.block(vec![(&alice, transfer(TENSOR))]);
    assert_eq!(
        chain.state.validate_extrinsic(&ok),
        Err(Error::StaleNonce {
            expected: 1,
            got: 0
        })
    );

    // An account that cannot pay the fee.
    let nobody = key("nobody");
    let xt = hypertensor_runtime::Extrinsic::sign(&nobody, 0, Call::ClaimUnbonded, &genesis);
    assert_eq!(
        chain.state.validate_extrinsic(&xt),
        Err(Error::CannotPayFee {
            fee: chain.params().tx_base_fee,
            free: 0
        })
    );
}

#[test]
fn block_full_and_signature_skipping() {
    let chain = Chain::with_params(Params {
        max_block_extrinsics: 2,
        ..Params::devnet()
    });
    let alice = key("alice");
    let mut b = BlockBuilder::new(&chain.state, id("author"), 1).unwrap();
    for n in 0..2 {
        assert_eq!(
            b.push(chain.sign(&alice, n, transfer(1))),
            Ok(Applied::Success)
        );
    }
    assert_eq!(
        b.push(chain.sign(&alice, 2, transfer(1))),
        Err(Error::BlockFull { max: 2 })
    );

    // AlreadyVerified skips the signature: for pre-verified extrinsics only.
    let mut xt = chain.sign(&alice, 0, transfer(1));
    xt.signature = Signature([0; 64]);
    let mut b = BlockBuilder::new(&chain.state, id("author"), 1).unwrap();
    assert_eq!(
        b.push_with(xt.clone(), SignatureCheck::AlreadyVerified),
        Ok(Applied::Success)
    );
    // ...and a block holding it is refused on import.
    let built = b.finish();
    assert!(matches!(
        apply_block(&chain.state, &built.block),
        Err(Error::InvalidExtrinsic { index: 0, .. })
    ));
}

#[test]
fn failed_calls_are_included_and_reported() {
    let mut chain = Chain::new();
    let alice = key("alice");
    let results = chain.block(vec![
        (
            &alice,
            Call::Transfer {
                to: alice.account_id(),
                amount: 1,
            },
        ),
        (&alice, transfer(1)),
    ]);
    assert_eq!(
        results,
        vec![Applied::Failed(Error::TransferToSelf), Applied::Success]
    );
    assert!(chain.events().contains(&Event::ExtrinsicFailed {
        error: Error::TransferToSelf
    }));
    assert_eq!(chain.state.account(&alice.account_id()).nonce, 2);
}

#[test]
fn genesis_config_json_and_errors() {
    let json = r#"{
        "params": {"epoch_length": 5, "tx_base_fee": "0.01"},
        "timestamp_ms": 42,
        "accounts": [{"account": "ACCOUNT", "balance": "1000.5"}]
    }"#
    .replace("ACCOUNT", &id("alice").to_string());
    let config = GenesisConfig::from_json(&json).unwrap();
    assert_eq!(config.params.tx_base_fee, TENSOR / 100);
    assert_eq!(config.params.block_time_ms, 6000);
    let built = config.build().unwrap();
    assert_eq!(
        built.state.account(&id("alice")).free,
        1000 * TENSOR + TENSOR / 2
    );
    assert_eq!(built.block.header.height, 0);
    assert_eq!(built.state.genesis_hash(), built.block.hash());
    assert_eq!(built.state.timestamp_ms(), 42);

    assert!(matches!(
        GenesisConfig::from_json("{\"acounts\": []}"),
        Err(Error::InvalidGenesis { .. })
    ));
    assert!(matches!(
        GenesisConfig::from_json("not json"),
        Err(Error::InvalidGenesis { .. })
    ));

    let mut bad = GenesisConfig::dev();
    bad.params.epoch_length = 0;
    assert!(matches!(bad.build(), Err(Error::InvalidParams { .. })));

    let mut dup = GenesisConfig::dev();
    dup.accounts.push(dup.accounts[0].clone());
    assert!(
        matches!(dup.build(), Err(Error::InvalidGenesis { reason }) if reason.contains("twice"))
    );

    let mut rich = GenesisConfig::dev();
    rich.accounts[0].balance = 28_000_000 * TENSOR;
    assert!(
        matches!(rich.build(), Err(Error::InvalidGenesis { reason }) if reason.contains("target_max_supply"))
    );

    let mut small = GenesisConfig::dev();
    small.subnets.push(hypertensor_runtime::GenesisSubnet {
        name: "s".into(),
        model: "m".into(),
        owner: id("alice"),
        min_stake: 100 * TENSOR,
        max_stake: 1000 * TENSOR,
        active: true,
        nodes: vec![],
    });
    assert!(
        matches!(small.build(), Err(Error::InvalidGenesis { reason }) if reason.contains("needs 3 nodes"))
    );

    // Different genesis, different network: signatures do not carry over.
    let a = GenesisConfig::dev().build().unwrap().state.genesis_hash();
    let mut other = GenesisConfig::dev();
    other.timestamp_ms = 1;
    assert_ne!(a, other.build().unwrap().state.genesis_hash());
}

#[test]
fn genesis_subnet_is_active_with_an_election_at_epoch_zero() {
    let mut config = GenesisConfig::dev();
    config.subnets.push(hypertensor_runtime::GenesisSubnet {
        name: "s".into(),
        model: "m".into(),
        owner: id("alice"),
        min_stake: 100 * TENSOR,
        max_stake: 1000 * TENSOR,
        active: true,
        nodes: (0..3)
            .map(|i| hypertensor_runtime::GenesisNode {
                owner: id("alice"),
                hotkey: id(&format!("hot{i}")),
                peer_id: crate::common::peer(&i.to_string()),
                client_peer_id: None,
                stake: 100 * TENSOR,
                class: NodeClass::Validator,
            })
            .collect(),
    });
    let built = config.build().unwrap();
    assert!(built.state.elected_validator(1, 0).is_some());
    assert!(built.events.iter().any(|r| matches!(
        r.event,
        Event::ValidatorElected {
            subnet: 1,
            epoch: 0,
            ..
        }
    )));
    let totals = built.state.check_invariants().unwrap();
    assert_eq!(totals.staked, 300 * TENSOR);
}

#[test]
fn state_root_is_deterministic_and_survives_serde() {
    let mut a = Chain::new();
    let s = active_subnet(&mut a, "s", 3, 0, 1000 * TENSOR);
    let root = a.state.state_root();
    let settled_epoch = a.epoch();
    // The same blocks from the same genesis give the same root...
    let mut b = Chain::new();
    active_subnet(&mut b, "s", 3, 0, 1000 * TENSOR);
    assert_eq!(b.state.state_root(), root);
    // ...any change changes it...
    a.block(vec![(&key("alice"), transfer(1))]);
    assert_ne!(a.state.state_root(), root);
    // ...and a state stored as JSON (with settled consensus data and all
    // event kinds of a block) reloads to the same root.
    let scores = s.nodes.iter().map(|(_, _, n)| (*n, 1)).collect();
    crate::common::consensus_round(&mut a, &s, scores, |_| true);
    a.run_to_epoch(settled_epoch + 1);
    assert!(
        a.state
            .consensus_data(s.id, settled_epoch)
            .unwrap()
            .outcome
            .is_some()
    );
    let events_json = serde_json::to_string(&a.last_events).unwrap();
    let events: Vec<hypertensor_runtime::EventRecord> = serde_json::from_str(&events_json).unwrap();
    assert_eq!(events, a.last_events);
    let json = serde_json::to_string(&a.state).unwrap();
    let loaded: State = serde_json::from_str(&json).unwrap();
    assert_eq!(loaded.state_root(), a.state.state_root());
    assert_eq!(loaded, a.state);
}

#[test]
fn read_accessors_for_the_chain_node() {
    let mut chain = Chain::new();
    let s = active_subnet(&mut chain, "s", 3, 1, 1000 * TENSOR);
    let info = chain.state.epoch_info();
    assert_eq!(
        (info.epoch, info.block_in_epoch, info.epoch_length),
        (2, 0, 10)
    );
    assert_eq!(info.next_epoch_height, 30);
    chain.block(vec![]);
    chain.block(vec![]);
    let info = chain.state.epoch_info();
    assert_eq!(info.progress.to_string(), "0.2");

    let validator_peer = chain
        .state
        .subnet_node(s.id, s.nodes[0].2)
        .unwrap()
        .peer_id
        .clone();
    let idle_peer = chain
        .state
        .subnet_node(s.id, s.nodes[3].2)
        .unwrap()
        .peer_id
        .clone();
    assert!(
        chain
            .state
            .proof_of_stake(s.id, &validator_peer, NodeClass::Validator)
    );
    assert!(
        chain
            .state
            .proof_of_stake(s.id, &idle_peer, NodeClass::Idle)
    );
    assert!(
        !chain
            .state
            .proof_of_stake(s.id, &idle_peer, NodeClass::Included)
    );
    assert!(
        !chain
            .state
            .proof_of_stake(s.id + 1, &validator_peer, NodeClass::Registered)
    );
    assert!(
        !chain
            .state
            .proof_of_stake(s.id, &Keypair::dev("x").peer_id(), NodeClass::Registered)
    );

    let totals = chain.state.check_invariants().unwrap();
    assert_eq!(totals.staked, 4000 * TENSOR);
    assert_eq!(totals.treasury, 100 * TENSOR);
    assert_eq!(chain.state.subnet_nodes(s.id).count(), 4);
    assert_eq!(chain.state.subnets().count(), 1);
    assert!(chain.state.accounts().count() > 8);
    assert!(chain.state.elected_validator(s.id, 2).is_some());
}

#[test]
fn extrinsics_calls_events_and_errors_cross_json() {
    let chain = Chain::new();
    let alice = key("alice");
    let xt = chain.sign(&alice, 0, transfer(5));
    let json = serde_json::to_string(&xt).unwrap();
    assert!(json.contains(r#""call":{"transfer":{"to":"#), "{json}");
    let back: hypertensor_runtime::Extrinsic = serde_json::from_str(&json).unwrap();
    assert_eq!(back, xt);
    assert!(chain.state.validate_extrinsic(&back).unwrap().ready);
    let claim: Call = serde_json::from_str(r#""claim_unbonded""#).unwrap();
    assert_eq!(claim, Call::ClaimUnbonded);
    // Amounts above u64 cross JSON exactly.
    let big = format!(
        r#"{{"transfer":{{"to":"{}","amount":{}}}}}"#,
        id("bob"),
        u128::MAX
    );
    assert_eq!(
        serde_json::from_str::<Call>(&big).unwrap(),
        Call::Transfer {
            to: id("bob"),
            amount: u128::MAX
        }
    );
    assert!(serde_json::from_str::<Call>(r#"{"transfer":{"to":"0x00","amount":1}}"#).is_err());
    assert!(serde_json::from_str::<Call>(r#"{"mint":{"amount":1}}"#).is_err());

    let error = Error::InvalidExtrinsic {
        index: 3,
        reason: Box::new(Error::StaleNonce {
            expected: 2,
            got: 1,
        }),
    };
    let json = serde_json::to_string(&error).unwrap();
    assert_eq!(
        json,
        r#"{"invalid_extrinsic":{"index":3,"reason":{"stale_nonce":{"expected":2,"got":1}}}}"#
    );
    assert_eq!(serde_json::from_str::<Error>(&json).unwrap(), error);
    let big = Error::InsufficientBalance {
        needed: u128::MAX,
        free: 1,
    };
    assert_eq!(
        serde_json::from_str::<Error>(&serde_json::to_string(&big).unwrap()).unwrap(),
        big
    );
    assert_eq!(
        error.to_string(),
        "extrinsic 3 is invalid: stale nonce 1, expected 2"
    );

    let event = Event::ExtrinsicFailed {
        error: Error::NothingToClaim,
    };
    let json = serde_json::to_string(&event).unwrap();
    assert_eq!(json, r#"{"extrinsic_failed":{"error":"nothing_to_claim"}}"#);
    assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
}
