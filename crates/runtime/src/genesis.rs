//! The genesis configuration (serde JSON) and the genesis block.
//!
//! The genesis block has height 0, a zero parent hash, no extrinsics and
//! the zero account as author; its header hash is the **genesis hash** that
//! every signature of the network binds (SPEC §2). Genesis mints nothing by
//! subsidy: issuance starts as the endowments plus the genesis nodes'
//! stakes, and counts against `target_max_supply`. Active genesis subnets
//! get their validator for epoch 0 elected with a zero parent hash.

use std::collections::{BTreeMap, BTreeSet};

use hypertensor_primitives::units::serde_tensor;
use hypertensor_primitives::{
    AccountId, Balance, DEV_ACCOUNT_NAMES, H256, Keypair, PeerId, TENSOR,
};
use serde::{Deserialize, Serialize};

use crate::block::{Block, Header, extrinsics_root};
use crate::call::Call;
use crate::event::{EventRecord, Phase};
use crate::executive::BuiltBlock;
use crate::params::Params;
use crate::state::State;
use crate::types::{NodeClass, Subnet, SubnetNode, SubnetState};
use crate::{Error, Result};

/// An endowed account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// The account.
    pub account: AccountId,
    /// Its free balance (TENSOR string such as `"1000"`, or base units).
    #[serde(with = "serde_tensor")]
    pub balance: Balance,
}

/// A chain validator: one of the parties that finalize blocks (the BFT
/// engine's participant set, fixed by the genesis).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainValidator {
    /// Its ed25519 key as an account: it signs votes, and it is paid the
    /// author share of the blocks it proposes.
    pub account: AccountId,
    /// Where the other validators reach it, `host:port` (its P2P socket).
    pub address: String,
}

impl hypertensor_primitives::codec::Encode for ChainValidator {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.account.encode_to(out);
        self.address.encode_to(out);
    }
}

/// Longest accepted validator address.
pub const MAX_VALIDATOR_ADDRESS_LEN: usize = 256;

/// Most chain validators a genesis may name.
pub const MAX_CHAIN_VALIDATORS: usize = 128;

/// A node present at genesis (already activated).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisNode {
    /// Owner account.
    pub owner: AccountId,
    /// Hotkey account.
    pub hotkey: AccountId,
    /// libp2p peer id.
    pub peer_id: PeerId,
    /// Optional client peer id.
    #[serde(default)]
    pub client_peer_id: Option<PeerId>,
    /// Stake (minted at genesis).
    #[serde(with = "serde_tensor")]
    pub stake: Balance,
    /// Class (Idle, Included or Validator; default Validator).
    #[serde(default = "validator_class")]
    pub class: NodeClass,
}

fn validator_class() -> NodeClass {
    NodeClass::Validator
}

/// A subnet present at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisSubnet {
    /// Unique name.
    pub name: String,
    /// Model reference.
    pub model: String,
    /// Owner.
    pub owner: AccountId,
    /// Least stake per node.
    #[serde(with = "serde_tensor")]
    pub min_stake: Balance,
    /// Most stake per node.
    #[serde(with = "serde_tensor")]
    pub max_stake: Balance,
    /// Active from genesis (needs `min_subnet_nodes` nodes).
    #[serde(default)]
    pub active: bool,
    /// Nodes, which get ids 1, 2, ... in this order.
    #[serde(default)]
    pub nodes: Vec<GenesisNode>,
}

/// Everything that defines a chain's first state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisConfig {
    /// Parameters (missing fields take their defaults).
    #[serde(default)]
    pub params: Params,
    /// Timestamp of the genesis block (ms).
    #[serde(default)]
    pub timestamp_ms: u64,
    /// Endowed accounts.
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
    /// Initial subnets.
    #[serde(default)]
    pub subnets: Vec<GenesisSubnet>,
    /// The chain validators that finalize blocks. Empty means the dev
    /// default: `alice` alone (see [`GenesisConfig::effective_validators`]).
    #[serde(default)]
    pub validators: Vec<ChainValidator>,
}

impl GenesisConfig {
    /// The development chain: devnet parameters and 1,000,000 TENSOR for
    /// each development account of
    /// [`DEV_ACCOUNT_NAMES`](hypertensor_primitives::DEV_ACCOUNT_NAMES)
    /// (`Keypair::dev(name)`), no subnets.
    pub fn dev() -> GenesisConfig {
        GenesisConfig {
            params: Params::devnet(),
            timestamp_ms: 0,
            accounts: DEV_ACCOUNT_NAMES
                .iter()
                .map(|name| GenesisAccount {
                    account: Keypair::dev(name).account_id(),
                    balance: 1_000_000 * TENSOR,
                })
                .collect(),
            subnets: Vec::new(),
            validators: Vec::new(),
        }
    }

    /// The validator set this genesis starts with: the listed validators,
    /// or `alice` alone at `127.0.0.1:0` when none are listed (the
    /// one-validator development chain).
    pub fn effective_validators(&self) -> Vec<ChainValidator> {
        if self.validators.is_empty() {
            vec![ChainValidator {
                account: Keypair::dev("alice").account_id(),
                address: "127.0.0.1:0".to_string(),
            }]
        } else {
            self.validators.clone()
        }
    }

    /// Parses a genesis file's JSON.
    pub fn from_json(json: &str) -> Result<GenesisConfig> {
        serde_json::from_str(json).map_err(|e| Error::InvalidGenesis {
            reason: e.to_string(),
        })
    }

    /// Checks the configuration and builds the genesis state and block.
    pub fn build(&self) -> Result<BuiltBlock> {
        self.params.validate()?;
        let bad = |reason: String| Error::InvalidGenesis { reason };
        let mut state = State {
            genesis_hash: H256::ZERO,
            best_hash: H256::ZERO,
            params: self.params.clone(),
            height: 0,
            timestamp_ms: self.timestamp_ms,
            accounts: BTreeMap::new(),
            subnets: BTreeMap::new(),
            next_subnet_id: 1,
            unbonding: BTreeMap::new(),
            consensus: BTreeMap::new(),
            chain_validators: Vec::new(),
            vault: 0,
            treasury: 0,
            total_issuance: 0,
        };
        let validators = self.effective_validators();
        if validators.len() > MAX_CHAIN_VALIDATORS {
            return Err(bad(format!(
                "{} chain validators; at most {MAX_CHAIN_VALIDATORS}",
                validators.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for (i, v) in validators.iter().enumerate() {
            if !seen.insert(v.account) {
                return Err(bad(format!("validator {i}: {} listed twice", v.account)));
            }
            if v.address.is_empty() || v.address.len() > MAX_VALIDATOR_ADDRESS_LEN {
                return Err(bad(format!(
                    "validator {i}: address must be 1 to {MAX_VALIDATOR_ADDRESS_LEN} bytes"
                )));
            }
        }
        // Sorted, as the BFT engine orders its participants.
        state.chain_validators = validators;
        state.chain_validators.sort();
        let mut issuance: Balance = 0;
        let mut add_issuance = |amount: Balance| {
            issuance = issuance
                .checked_add(amount)
                .ok_or_else(|| bad("total issuance overflows".to_string()))?;
            Ok::<_, Error>(())
        };
        for a in &self.accounts {
            if state.accounts.contains_key(&a.account) {
                return Err(bad(format!("account {} endowed twice", a.account)));
            }
            add_issuance(a.balance)?;
            state.account_mut(&a.account).free = a.balance;
        }
        for (i, g) in self.subnets.iter().enumerate() {
            let id = state.next_subnet_id;
            let context = |what: String| bad(format!("subnet {i} ({}): {what}", g.name));
            // The same checks as the register_subnet call, minus the fee.
            Call::RegisterSubnet {
                name: g.name.clone(),
                model: g.model.clone(),
                min_stake: g.min_stake,
                max_stake: g.max_stake,
                initial_validators: Vec::new(),
            }
            .check_stateless(&self.params)
            .map_err(|e| context(e.to_string()))?;
            if state.subnets.len() >= self.params.max_subnets as usize {
                return Err(context("more than max_subnets subnets".to_string()));
            }
            if state.subnets.values().any(|s| s.name == g.name) {
                return Err(context("name used twice".to_string()));
            }
            if g.nodes.len() > self.params.max_nodes_per_subnet as usize {
                return Err(context("more than max_nodes_per_subnet nodes".to_string()));
            }
            let mut nodes = BTreeMap::new();
            let mut peers = BTreeSet::new();
            let mut hotkeys = BTreeSet::new();
            for (j, n) in g.nodes.iter().enumerate() {
                let node_id = j as u32 + 1;
                if n.stake < g.min_stake || n.stake > g.max_stake {
                    return Err(context(format!(
                        "node {node_id}: stake outside the subnet's bounds"
                    )));
                }
                if n.class == NodeClass::Registered {
                    return Err(context(format!(
                        "node {node_id}: genesis nodes are activated (class idle, included or validator)"
                    )));
                }
                let peer_ids = std::iter::once(&n.peer_id).chain(n.client_peer_id.as_ref());
                for p in peer_ids {
                    if !peers.insert(p.clone()) {
                        return Err(context(format!("node {node_id}: peer id {p} used twice")));
                    }
                }
                if !hotkeys.insert(n.hotkey) {
                    return Err(context(format!("node {node_id}: hotkey used twice")));
                }
                add_issuance(n.stake)?;
                nodes.insert(
                    node_id,
                    SubnetNode {
                        id: node_id,
                        owner: n.owner,
                        hotkey: n.hotkey,
                        peer_id: n.peer_id.clone(),
                        client_peer_id: n.client_peer_id.clone(),
                        stake: n.stake,
                        class: n.class,
                        class_start_epoch: 0,
                        start_epoch: 0,
                        penalties: 0,
                        promotion_progress: 0,
                    },
                );
            }
            if g.active && nodes.len() < self.params.min_subnet_nodes as usize {
                return Err(context(format!(
                    "an active subnet needs {} nodes",
                    self.params.min_subnet_nodes
                )));
            }
            state.subnets.insert(
                id,
                Subnet {
                    id,
                    name: g.name.clone(),
                    model: g.model.clone(),
                    owner: g.owner,
                    min_stake: g.min_stake,
                    max_stake: g.max_stake,
                    state: if g.active {
                        SubnetState::Active
                    } else {
                        SubnetState::Registered
                    },
                    registered_epoch: 0,
                    activated_epoch: g.active.then_some(0),
                    initial_validators: Vec::new(),
                    next_node_id: nodes.len() as u32 + 1,
                    nodes,
                },
            );
            state.next_subnet_id += 1;
        }
        if issuance > self.params.target_max_supply {
            return Err(bad(format!(
                "endowments and stakes ({issuance}) exceed target_max_supply ({})",
                self.params.target_max_supply
            )));
        }
        state.total_issuance = issuance;
        let mut events = Vec::new();
        state.elect(0, &H256::ZERO, &mut events);
        let header = Header {
            height: 0,
            parent_hash: H256::ZERO,
            state_root: state.state_root(),
            extrinsics_root: extrinsics_root(&[]),
            author: AccountId::default(),
            timestamp_ms: self.timestamp_ms,
        };
        let hash = header.hash();
        state.genesis_hash = hash;
        state.best_hash = hash;
        Ok(BuiltBlock {
            block: Block {
                header,
                extrinsics: Vec::new(),
            },
            state,
            events: events
                .into_iter()
                .map(|event| EventRecord {
                    phase: Phase::Initialization,
                    event,
                })
                .collect(),
        })
    }
}
