//! Property test over random sequences of calls and blocks: no panic, every
//! block re-imports to the same state, and issuance is conserved after
//! every block.

use hypertensor_primitives::{Keypair, PeerId, TENSOR};
use hypertensor_runtime::{BlockBuilder, Call, GenesisConfig, NodeId, Params, State, apply_block};
use proptest::prelude::*;

const ACCOUNTS: usize = 6;
const PEERS: usize = 12;

#[derive(Clone, Debug)]
enum Action {
    Call {
        signer: usize,
        call: FuzzCall,
    },
    /// The elected validator of subnet `subnet` proposes scores, then
    /// `attesters` of the snapshot attest.
    Consensus {
        subnet: u32,
        scores: Vec<u128>,
        attesters: usize,
    },
    EndBlock,
    SkipBlocks(u8),
}

#[derive(Clone, Debug)]
enum FuzzCall {
    Transfer(usize, u128),
    RegisterSubnet(u8, Vec<usize>),
    ActivateSubnet(u32),
    RegisterNode(u32, usize, usize, u128),
    ActivateNode(u32, NodeId),
    AddStake(u32, NodeId, u128),
    RemoveStake(u32, NodeId, u128),
    RemoveNode(u32, NodeId),
    Claim,
    Propose(u32, u64, Vec<(NodeId, u128)>),
    Attest(u32, u64),
}

fn account(i: usize) -> Keypair {
    Keypair::dev(&format!("fuzz-{i}"))
}

fn peer(i: usize) -> PeerId {
    Keypair::dev(&format!("fuzz-peer-{i}")).peer_id()
}

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        Just(0u128),
        1u128..1000,
        (1u128..2000).prop_map(|t| t * TENSOR),
        Just(u128::MAX),
    ]
}

fn fuzz_call() -> impl Strategy<Value = FuzzCall> {
    prop_oneof![
        (0..ACCOUNTS, amount()).prop_map(|(to, a)| FuzzCall::Transfer(to, a)),
        (0u8..4, prop::collection::vec(0..PEERS, 0..4))
            .prop_map(|(n, v)| FuzzCall::RegisterSubnet(n, v)),
        (1u32..4).prop_map(FuzzCall::ActivateSubnet),
        (
            1u32..4,
            0..ACCOUNTS,
            0..PEERS,
            (100u128..1200).prop_map(|t| t * TENSOR)
        )
            .prop_map(|(s, h, p, st)| FuzzCall::RegisterNode(s, h, p, st)),
        (1u32..4, 1u32..8).prop_map(|(s, n)| FuzzCall::ActivateNode(s, n)),
        (1u32..4, 1u32..8, amount()).prop_map(|(s, n, a)| FuzzCall::AddStake(s, n, a)),
        (1u32..4, 1u32..8, amount()).prop_map(|(s, n, a)| FuzzCall::RemoveStake(s, n, a)),
        (1u32..4, 1u32..8).prop_map(|(s, n)| FuzzCall::RemoveNode(s, n)),
        Just(FuzzCall::Claim),
        (
            1u32..4,
            0u64..30,
            prop::collection::vec((1u32..8, 0u128..1000), 0..5)
        )
            .prop_map(|(s, e, v)| FuzzCall::Propose(s, e, v)),
        (1u32..4, 0u64..30).prop_map(|(s, e)| FuzzCall::Attest(s, e)),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0..ACCOUNTS, fuzz_call()).prop_map(|(signer, call)| Action::Call { signer, call }),
        2 => (1u32..4, prop::collection::vec(0u128..5, 0..8), 0usize..8)
            .prop_map(|(subnet, scores, attesters)| Action::Consensus { subnet, scores, attesters }),
        2 => Just(Action::EndBlock),
        1 => (1u8..12).prop_map(Action::SkipBlocks),
    ]
}

fn to_call(state: &State, call: &FuzzCall) -> Call {
    match call.clone() {
        FuzzCall::Transfer(to, amount) => Call::Transfer {
            to: account(to).account_id(),
            amount,
        },
        FuzzCall::RegisterSubnet(n, peers) => Call::RegisterSubnet {
            name: format!("subnet-{n}"),
            model: "m".into(),
            min_stake: 100 * TENSOR,
            max_stake: 1000 * TENSOR,
            initial_validators: peers.into_iter().map(peer).collect(),
        },
        FuzzCall::ActivateSubnet(subnet) => Call::ActivateSubnet { subnet },
        FuzzCall::RegisterNode(subnet, hot, p, stake) => Call::RegisterSubnetNode {
            subnet,
            hotkey: account(hot).account_id(),
            peer_id: peer(p),
            client_peer_id: None,
            stake,
        },
        FuzzCall::ActivateNode(subnet, node) => Call::ActivateSubnetNode { subnet, node },
        FuzzCall::AddStake(subnet, node, amount) => Call::AddStake {
            subnet,
            node,
            amount,
        },
        FuzzCall::RemoveStake(subnet, node, amount) => Call::RemoveStake {
            subnet,
            node,
            amount,
        },
        FuzzCall::RemoveNode(subnet, node) => Call::RemoveSubnetNode { subnet, node },
        FuzzCall::Claim => Call::ClaimUnbonded,
        FuzzCall::Propose(subnet, e, scores) => Call::ProposeAttestation {
            subnet,
            epoch: if e % 2 == 0 { state.epoch() } else { e },
            scores,
        },
        FuzzCall::Attest(subnet, e) => Call::Attest {
            subnet,
            epoch: if e % 2 == 0 { state.epoch() } else { e },
        },
    }
}

struct Runner {
    state: State,
    builder: BlockBuilder,
    time: u64,
    blocks: usize,
}

impl Runner {
    fn push(&mut self, signer: &Keypair, call: Call) {
        let nonce = self.builder.state().account(&signer.account_id()).nonce;
        let xt =
            hypertensor_runtime::Extrinsic::sign(signer, nonce, call, &self.state.genesis_hash());
        // Invalid extrinsics are refused without changing anything.
        let before = self.builder.state().clone();
        if self.builder.push(xt).is_err() {
            assert_eq!(*self.builder.state(), before);
        }
    }

    fn seal(&mut self) {
        self.time += 1000;
        let next = BlockBuilder::new(&self.state, account(0).account_id(), self.time).unwrap();
        let built = std::mem::replace(&mut self.builder, next).finish();
        let (imported, events) = apply_block(&self.state, &built.block).unwrap();
        assert_eq!(imported.state_root(), built.block.header.state_root);
        assert_eq!(events, built.events);
        if let Err(e) = imported.check_invariants() {
            panic!("after block {}: {e}", built.block.header.height);
        }
        self.state = imported;
        self.builder =
            BlockBuilder::new(&self.state, account(0).account_id(), self.time + 1000).unwrap();
        self.blocks += 1;
    }

    fn consensus(&mut self, subnet: u32, raw_scores: &[u128], attesters: usize) {
        let pending = self.builder.state().clone();
        let epoch = pending.epoch();
        let Some(record) = pending.consensus_data(subnet, epoch).cloned() else {
            return;
        };
        let Some(s) = pending.subnet(subnet) else {
            return;
        };
        let hot = |node: NodeId| {
            let hotkey = s.nodes.get(&node)?.hotkey;
            (0..ACCOUNTS)
                .map(account)
                .find(|k| k.account_id() == hotkey)
        };
        if let Some(proposer) = hot(record.validator) {
            let scores = s
                .nodes
                .values()
                .filter(|n| n.class.is_scored())
                .zip(raw_scores.iter().cycle())
                .map(|(n, sc)| (n.id, *sc * TENSOR))
                .collect();
            self.push(
                &proposer,
                Call::ProposeAttestation {
                    subnet,
                    epoch,
                    scores,
                },
            );
        }
        for node in record.snapshot.iter().take(attesters) {
            if let Some(k) = hot(*node) {
                self.push(&k, Call::Attest { subnet, epoch });
            }
        }
    }
}

fn genesis() -> State {
    let mut config = GenesisConfig::dev();
    config.params = Params {
        epoch_length: 5,
        max_subnets: 3,
        max_nodes_per_subnet: 6,
        unbonding_epochs: 2,
        idle_epochs: 1,
        included_epochs: 1,
        ..Params::devnet()
    };
    config.accounts = (0..ACCOUNTS)
        .map(|i| hypertensor_runtime::GenesisAccount {
            account: account(i).account_id(),
            balance: 5000 * TENSOR,
        })
        .collect();
    // Subnet 1 is active from genesis with four validators whose hotkeys
    // are fuzz accounts, so consensus actions settle from the first epoch.
    config.subnets = vec![hypertensor_runtime::GenesisSubnet {
        name: "genesis".into(),
        model: "m".into(),
        owner: account(0).account_id(),
        min_stake: 100 * TENSOR,
        max_stake: 1000 * TENSOR,
        active: true,
        nodes: (0..4)
            .map(|i| hypertensor_runtime::GenesisNode {
                owner: account(i).account_id(),
                hotkey: account(i).account_id(),
                peer_id: Keypair::dev(&format!("fuzz-genesis-peer-{i}")).peer_id(),
                client_peer_id: None,
                stake: (100 + 100 * i as u128) * TENSOR,
                class: hypertensor_runtime::NodeClass::Validator,
            })
            .collect(),
    }];
    config.build().unwrap().state
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_calls_conserve_issuance(actions in prop::collection::vec(action(), 1..150)) {
        let state = genesis();
        let builder = BlockBuilder::new(&state, account(0).account_id(), 1000).unwrap();
        let mut r = Runner { state, builder, time: 1000, blocks: 0 };
        for a in &actions {
            match a {
                Action::Call { signer, call } => {
                    let call = to_call(r.builder.state(), call);
                    r.push(&account(*signer), call);
                }
                Action::Consensus { subnet, scores, attesters } => r.consensus(*subnet, scores, *attesters),
                Action::EndBlock => r.seal(),
                Action::SkipBlocks(n) => {
                    for _ in 0..*n {
                        r.seal();
                    }
                }
            }
        }
        r.seal();
        prop_assert!(r.blocks >= 1);
    }
}
