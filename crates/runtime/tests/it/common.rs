//! A test chain: builds blocks from dev keys, re-imports every block with
//! `apply_block` and checks the issuance invariant after each one.

use hypertensor_primitives::{AccountId, Keypair, PeerId, TENSOR};
use hypertensor_runtime::{
    Applied, BlockBuilder, Call, Epoch, EventRecord, Extrinsic, GenesisConfig, NodeId, Params,
    State, SubnetId, apply_block,
};

pub(crate) struct Chain {
    pub(crate) state: State,
    pub(crate) author: Keypair,
    pub(crate) last_events: Vec<EventRecord>,
    pub(crate) timestamp: u64,
}

pub(crate) fn key(name: &str) -> Keypair {
    Keypair::dev(name)
}

pub(crate) fn id(name: &str) -> AccountId {
    key(name).account_id()
}

pub(crate) fn peer(name: &str) -> PeerId {
    key(&format!("peer-{name}")).peer_id()
}

impl Chain {
    /// Dev genesis with test-friendly parameters: 10-block epochs.
    pub(crate) fn new() -> Chain {
        Chain::with_params(Params {
            epoch_length: 10,
            ..Params::devnet()
        })
    }

    pub(crate) fn with_params(params: Params) -> Chain {
        let mut config = GenesisConfig::dev();
        config.params = params;
        Chain::from_config(&config)
    }

    pub(crate) fn from_config(config: &GenesisConfig) -> Chain {
        let built = config.build().unwrap();
        built.state.check_invariants().unwrap();
        Chain {
            state: built.state,
            author: key("author"),
            last_events: built.events,
            timestamp: config.timestamp_ms,
        }
    }

    pub(crate) fn params(&self) -> &Params {
        self.state.params()
    }

    pub(crate) fn epoch(&self) -> Epoch {
        self.state.epoch()
    }

    pub(crate) fn sign(&self, who: &Keypair, nonce: u64, call: Call) -> Extrinsic {
        Extrinsic::sign(who, nonce, call, &self.state.genesis_hash())
    }

    /// Builds, imports and checks one block of the given calls (nonces
    /// assigned in order per signer). Every extrinsic must be valid.
    pub(crate) fn block(&mut self, calls: Vec<(&Keypair, Call)>) -> Vec<Applied> {
        self.timestamp += 1000;
        let mut builder =
            BlockBuilder::new(&self.state, self.author.account_id(), self.timestamp).unwrap();
        let mut results = Vec::new();
        for (who, call) in calls {
            let nonce = builder.state().account(&who.account_id()).nonce;
            let xt = self.sign(who, nonce, call);
            results.push(builder.push(xt).expect("extrinsic must be valid"));
        }
        let built = builder.finish();
        // Any other node importing the block reaches the same state.
        let (imported, events) = apply_block(&self.state, &built.block).unwrap();
        assert_eq!(imported, built.state);
        assert_eq!(events, built.events);
        imported.check_invariants().unwrap();
        self.state = imported;
        self.last_events = events;
        results
    }

    /// One call in its own block; the call's outcome.
    pub(crate) fn call(
        &mut self,
        who: &Keypair,
        call: Call,
    ) -> Result<(), hypertensor_runtime::Error> {
        match self.block(vec![(who, call)]).remove(0) {
            Applied::Success => Ok(()),
            Applied::Failed(e) => Err(e),
        }
    }

    /// Empty blocks until the first block of `epoch` has been applied.
    pub(crate) fn run_to_epoch(&mut self, epoch: Epoch) {
        let target = epoch * self.params().epoch_length;
        while self.state.height() < target {
            self.block(vec![]);
        }
    }

    pub(crate) fn events(&self) -> Vec<hypertensor_runtime::Event> {
        self.last_events.iter().map(|r| r.event.clone()).collect()
    }
}

/// A subnet with nodes, ready for consensus.
pub(crate) struct TestSubnet {
    pub(crate) id: SubnetId,
    /// (owner key, hotkey, node id) per node.
    pub(crate) nodes: Vec<(Keypair, Keypair, NodeId)>,
}

impl TestSubnet {
    pub(crate) fn hotkey(&self, node: NodeId) -> &Keypair {
        &self.nodes.iter().find(|(_, _, n)| *n == node).unwrap().1
    }
}

/// Registers subnet `name` owned by alice with `validators` initial
/// validators (owners `<name>-owner-<i>`, funded by alice) plus `extra`
/// ordinary nodes, each with `stake`, activates everything and runs to the
/// next epoch so a validator is elected.
pub(crate) fn active_subnet(
    chain: &mut Chain,
    name: &str,
    validators: usize,
    extra: usize,
    stake: u128,
) -> TestSubnet {
    let alice = key("alice");
    let total = validators + extra;
    let owners: Vec<Keypair> = (0..total)
        .map(|i| key(&format!("{name}-owner-{i}")))
        .collect();
    let hotkeys: Vec<Keypair> = (0..total)
        .map(|i| key(&format!("{name}-hot-{i}")))
        .collect();
    let mut funding = Vec::new();
    for (o, h) in owners.iter().zip(&hotkeys) {
        funding.push((
            &alice,
            Call::Transfer {
                to: o.account_id(),
                amount: stake + 10 * TENSOR,
            },
        ));
        funding.push((
            &alice,
            Call::Transfer {
                to: h.account_id(),
                amount: TENSOR,
            },
        ));
    }
    let subnet_peers: Vec<PeerId> = (0..total).map(|i| peer(&format!("{name}-{i}"))).collect();
    funding.push((
        &alice,
        Call::RegisterSubnet {
            name: name.to_string(),
            model: format!("{name}/model"),
            min_stake: 100 * TENSOR,
            max_stake: 10_000 * TENSOR,
            initial_validators: subnet_peers[..validators].to_vec(),
        },
    ));
    assert!(chain.block(funding).iter().all(|r| *r == Applied::Success));
    let id = chain
        .state
        .subnets()
        .find(|s| s.name == name)
        .map(|s| s.id)
        .unwrap();
    let registrations = owners
        .iter()
        .zip(&hotkeys)
        .zip(&subnet_peers)
        .map(|((o, h), p)| {
            (
                o,
                Call::RegisterSubnetNode {
                    subnet: id,
                    hotkey: h.account_id(),
                    peer_id: p.clone(),
                    client_peer_id: None,
                    stake,
                },
            )
        })
        .collect();
    assert!(
        chain
            .block(registrations)
            .iter()
            .all(|r| *r == Applied::Success)
    );
    let first_node = chain.state.subnet(id).unwrap().next_node_id - total as u32;
    let node_ids: Vec<NodeId> = (0..total as u32).map(|i| first_node + i).collect();
    chain.run_to_epoch(chain.epoch() + 1);
    let activations = owners
        .iter()
        .zip(&node_ids)
        .map(|(o, n)| {
            (
                o,
                Call::ActivateSubnetNode {
                    subnet: id,
                    node: *n,
                },
            )
        })
        .collect();
    assert!(
        chain
            .block(activations)
            .iter()
            .all(|r| *r == Applied::Success)
    );
    chain
        .call(&alice, Call::ActivateSubnet { subnet: id })
        .unwrap();
    chain.run_to_epoch(chain.epoch() + 1);
    TestSubnet {
        id,
        nodes: owners
            .into_iter()
            .zip(hotkeys)
            .zip(node_ids)
            .map(|((o, h), n)| (o, h, n))
            .collect(),
    }
}

/// Runs `call` in a block, expects it to fail with a call error, and checks
/// it changed nothing but the signer's nonce and fee (compared with an empty
/// block built on the same parent).
pub(crate) fn fails(chain: &mut Chain, who: &Keypair, call: Call) -> hypertensor_runtime::Error {
    let before = chain.state.clone();
    let author = chain.author.account_id();
    let error = chain.call(who, call).unwrap_err();
    let baseline = BlockBuilder::new(&before, author, chain.timestamp)
        .unwrap()
        .finish()
        .state;
    let after = &chain.state;
    let fee = after.params().tx_base_fee;
    let author_share = after.params().block_author_share.mul_floor_unit(fee);
    let signer = who.account_id();
    assert!(
        after.subnets().eq(baseline.subnets()),
        "subnets changed by a failed call"
    );
    for s in after.subnets() {
        let e = after.epoch();
        assert_eq!(
            after.consensus_data(s.id, e),
            baseline.consensus_data(s.id, e)
        );
    }
    assert_eq!(after.treasury(), baseline.treasury());
    assert_eq!(after.vault(), baseline.vault() + fee - author_share);
    for (account, state) in after.accounts() {
        let mut expected = baseline.account(account);
        if *account == signer {
            expected.nonce += 1;
            expected.free -= fee;
        }
        if *account == author {
            expected.free += author_share;
        }
        assert_eq!(
            *state, expected,
            "account {account} changed by a failed call"
        );
        assert_eq!(after.unbonding(account), baseline.unbonding(account));
    }
    error
}

/// Expects `call` to be refused before inclusion (a validity error): by
/// `validate_extrinsic` and by the block builder, which keeps its state.
pub(crate) fn refused(chain: &Chain, who: &Keypair, call: Call) -> hypertensor_runtime::Error {
    let nonce = chain.state.account(&who.account_id()).nonce;
    let xt = chain.sign(who, nonce, call);
    let pool_error = chain.state.validate_extrinsic(&xt).unwrap_err();
    let mut builder = BlockBuilder::new(
        &chain.state,
        chain.author.account_id(),
        chain.timestamp + 1000,
    )
    .unwrap();
    let pending = builder.state().clone();
    let block_error = builder.push(xt).unwrap_err();
    assert_eq!(pool_error, block_error);
    assert_eq!(*builder.state(), pending);
    assert!(builder.extrinsics().is_empty());
    block_error
}

/// In one block of the current epoch: the elected validator proposes
/// `scores` and every other snapshot node for which `attests` is true
/// attests. Returns the elected node.
pub(crate) fn consensus_round(
    chain: &mut Chain,
    s: &TestSubnet,
    scores: Vec<(NodeId, u128)>,
    attests: impl Fn(NodeId) -> bool,
) -> NodeId {
    let epoch = chain.epoch();
    let record = chain.state.consensus_data(s.id, epoch).unwrap().clone();
    let mut calls = vec![(
        s.hotkey(record.validator),
        Call::ProposeAttestation {
            subnet: s.id,
            epoch,
            scores,
        },
    )];
    for node in record
        .snapshot
        .iter()
        .filter(|n| **n != record.validator && attests(**n))
    {
        calls.push((
            s.hotkey(*node),
            Call::Attest {
                subnet: s.id,
                epoch,
            },
        ));
    }
    let results = chain.block(calls);
    assert!(
        results.iter().all(|r| *r == Applied::Success),
        "{results:?}"
    );
    record.validator
}

/// Scores 1..=k for every Included or Validator node of the subnet.
pub(crate) fn scores_for_scored_nodes(chain: &Chain, subnet: SubnetId) -> Vec<(NodeId, u128)> {
    chain
        .state
        .subnet_nodes(subnet)
        .filter(|n| n.class.is_scored())
        .map(|n| (n.id, TENSOR))
        .collect()
}
