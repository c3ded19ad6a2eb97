//! The records the chain state is made of (SPEC §3.2).

use std::collections::{BTreeMap, BTreeSet};

use hypertensor_primitives::codec::Encode;
use hypertensor_primitives::{AccountId, Balance, Fixed, PeerId};
use serde::{Deserialize, Serialize};

/// Identifier of a subnet, assigned from 1 upward.
pub type SubnetId = u32;
/// Identifier of a node within its subnet, assigned from 1 upward.
pub type NodeId = u32;
/// Epoch number: epoch `e` spans blocks `[e*L, (e+1)*L)`.
pub type Epoch = u64;
/// Block height; the genesis block is height 0.
pub type BlockNumber = u64;

/// An account's free balance and next nonce.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub free: Balance,
    /// Nonce the account's next extrinsic must carry.
    pub nonce: u64,
}

impl Encode for Account {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.free.encode_to(out);
        self.nonce.encode_to(out);
    }
}

/// Lifecycle state of a subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubnetState {
    /// Registered, nodes may join; no elections, no rewards.
    Registered,
    /// Activated by its owner: elections every epoch, settled and paid.
    Active,
}

/// Class of a subnet node (SPEC §3.3), ordered from least to most trusted:
/// `Registered < Idle < Included < Validator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeClass {
    /// Staked but not yet activated.
    Registered,
    /// Activated; waits for `idle_epochs` in-consensus epochs.
    Idle,
    /// May be scored and paid.
    Included,
    /// May also be elected, propose and attest.
    Validator,
}

impl NodeClass {
    fn index(self) -> u8 {
        match self {
            NodeClass::Registered => 0,
            NodeClass::Idle => 1,
            NodeClass::Included => 2,
            NodeClass::Validator => 3,
        }
    }

    /// Whether nodes of this class are scored and paid.
    pub fn is_scored(self) -> bool {
        matches!(self, NodeClass::Included | NodeClass::Validator)
    }
}

/// A subnet: one model served by a swarm of nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Its id.
    pub id: SubnetId,
    /// Unique human-readable name.
    pub name: String,
    /// Model repository or file hash the subnet serves.
    pub model: String,
    /// Account that registered it and may activate it.
    pub owner: AccountId,
    /// Least stake of one node.
    pub min_stake: Balance,
    /// Most stake of one node.
    pub max_stake: Balance,
    /// Registered or Active.
    pub state: SubnetState,
    /// Epoch of registration.
    pub registered_epoch: Epoch,
    /// Epoch of activation, once active.
    pub activated_epoch: Option<Epoch>,
    /// Peer ids named at registration: their nodes start as Validator class
    /// when activated while the subnet is still Registered.
    pub initial_validators: Vec<PeerId>,
    /// Id the next registered node receives.
    pub next_node_id: NodeId,
    /// The nodes, by id.
    pub nodes: BTreeMap<NodeId, SubnetNode>,
}

impl Subnet {
    /// The node whose hotkey is `hotkey`, if any.
    pub fn node_by_hotkey(&self, hotkey: &AccountId) -> Option<&SubnetNode> {
        self.nodes.values().find(|n| n.hotkey == *hotkey)
    }

    /// The node with peer id (or client peer id) `peer_id`, if any.
    pub fn node_by_peer_id(&self, peer_id: &PeerId) -> Option<&SubnetNode> {
        self.nodes
            .values()
            .find(|n| n.peer_id == *peer_id || n.client_peer_id.as_ref() == Some(peer_id))
    }

    /// Number of activated nodes (class Idle or above).
    pub fn activated_nodes(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| n.class >= NodeClass::Idle)
            .count()
    }
}

impl Encode for Subnet {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.id.encode_to(out);
        self.name.encode_to(out);
        self.model.encode_to(out);
        self.owner.encode_to(out);
        self.min_stake.encode_to(out);
        self.max_stake.encode_to(out);
        u8::from(self.state == SubnetState::Active).encode_to(out);
        self.registered_epoch.encode_to(out);
        self.activated_epoch.encode_to(out);
        self.initial_validators.encode_to(out);
        self.next_node_id.encode_to(out);
        self.nodes.encode_to(out);
    }
}

/// A staked node of a subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetNode {
    /// Its id within the subnet.
    pub id: NodeId,
    /// Account whose stake it is; receives rewards and unbonded stake.
    pub owner: AccountId,
    /// Key the node software signs consensus calls with.
    pub hotkey: AccountId,
    /// libp2p peer id of the node.
    pub peer_id: PeerId,
    /// Optional second peer id the node uses as a client.
    pub client_peer_id: Option<PeerId>,
    /// Bonded stake.
    pub stake: Balance,
    /// Current class.
    pub class: NodeClass,
    /// Epoch the node entered its current class.
    pub class_start_epoch: Epoch,
    /// First epoch in which the registration may be activated.
    pub start_epoch: Epoch,
    /// Penalties; the node is removed at `max_penalties`.
    pub penalties: u32,
    /// Epochs counted toward the next promotion.
    pub promotion_progress: u32,
}

impl Encode for SubnetNode {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.id.encode_to(out);
        self.owner.encode_to(out);
        self.hotkey.encode_to(out);
        self.peer_id.encode_to(out);
        self.client_peer_id.encode_to(out);
        self.stake.encode_to(out);
        self.class.index().encode_to(out);
        self.class_start_epoch.encode_to(out);
        self.start_epoch.encode_to(out);
        self.penalties.encode_to(out);
        self.promotion_progress.encode_to(out);
    }
}

/// Stake on its way back to an account's free balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnbondingEntry {
    /// First epoch in which `claim_unbonded` releases it.
    pub claimable_epoch: Epoch,
    /// Amount.
    pub amount: Balance,
}

impl Encode for UnbondingEntry {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.claimable_epoch.encode_to(out);
        self.amount.encode_to(out);
    }
}

/// How an epoch of a subnet was settled (SPEC §3.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementOutcome {
    /// The elected validator proposed nothing: it was penalized.
    NoProposal,
    /// Too few attestations: the elected validator was slashed and penalized.
    BelowMinAttestation {
        /// Attestations / snapshot size.
        ratio: Fixed,
        /// Amount moved from its stake to the treasury.
        slashed: Balance,
    },
    /// In consensus with all scores zero: nothing paid, the vault keeps it.
    HeldRewards {
        /// Attestations / snapshot size.
        ratio: Fixed,
    },
    /// In consensus: the subnet received `allocation` from the vault.
    InConsensus {
        /// Attestations / snapshot size.
        ratio: Fixed,
        /// The subnet's share of the vault (validator reward + node rewards).
        allocation: Balance,
    },
}

impl Encode for SettlementOutcome {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            SettlementOutcome::NoProposal => 0u8.encode_to(out),
            SettlementOutcome::BelowMinAttestation { ratio, slashed } => {
                (1u8, ratio, slashed).encode_to(out)
            }
            SettlementOutcome::HeldRewards { ratio } => (2u8, ratio).encode_to(out),
            SettlementOutcome::InConsensus { ratio, allocation } => {
                (3u8, ratio, allocation).encode_to(out)
            }
        }
    }
}

/// Consensus data of one subnet in one epoch (SPEC §3.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochConsensus {
    /// The subnet.
    pub subnet: SubnetId,
    /// The epoch.
    pub epoch: Epoch,
    /// Node elected to propose.
    pub validator: NodeId,
    /// Validator-class nodes at election, ascending: who may attest, and the
    /// denominator of the attestation ratio.
    pub snapshot: Vec<NodeId>,
    /// The proposed scores, once proposed (node ids ascending).
    pub proposal: Option<Vec<(NodeId, u128)>>,
    /// Nodes that attested (the proposer included).
    pub attestations: BTreeSet<NodeId>,
    /// Filled in when the epoch is settled.
    pub outcome: Option<SettlementOutcome>,
}

impl Encode for EpochConsensus {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.subnet.encode_to(out);
        self.epoch.encode_to(out);
        self.validator.encode_to(out);
        self.snapshot.encode_to(out);
        self.proposal.encode_to(out);
        self.attestations.encode_to(out);
        self.outcome.encode_to(out);
    }
}

/// Where the chain is in its epoch, for clients and subnet nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochInfo {
    /// Height of the latest block.
    pub height: BlockNumber,
    /// Its epoch.
    pub epoch: Epoch,
    /// Its offset in the epoch, `height % epoch_length`.
    pub block_in_epoch: u64,
    /// `epoch_length`.
    pub epoch_length: u64,
    /// `block_in_epoch / epoch_length`, in `[0, 1)`.
    pub progress: Fixed,
    /// Height of the first block of the next epoch.
    pub next_epoch_height: BlockNumber,
    /// Target block time, for estimating wall-clock time.
    pub block_time_ms: u64,
}

/// Where every base unit is (SPEC §3.2 invariant).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// All units ever minted (genesis endowments and subsidies).
    pub issuance: Balance,
    /// Σ free balances.
    pub free: Balance,
    /// Σ node stakes.
    pub staked: Balance,
    /// Σ unbonding entries.
    pub unbonding: Balance,
    /// Rewards vault.
    pub vault: Balance,
    /// Treasury.
    pub treasury: Balance,
}

impl Totals {
    /// `free + staked + unbonding + vault + treasury`, `None` on overflow.
    pub fn accounted(&self) -> Option<Balance> {
        self.free
            .checked_add(self.staked)?
            .checked_add(self.unbonding)?
            .checked_add(self.vault)?
            .checked_add(self.treasury)
    }
}
