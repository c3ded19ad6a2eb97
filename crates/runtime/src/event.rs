//! Events: one per effect of a block (SPEC §3.5: "every change is recorded
//! as an event of the block").

use hypertensor_primitives::{AccountId, Balance, Fixed, PeerId};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::types::{BlockNumber, Epoch, NodeClass, NodeId, SettlementOutcome, SubnetId};

/// When in the block an event happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", content = "index", rename_all = "snake_case")]
pub enum Phase {
    /// Block initialization: subsidy, epoch settlement, election.
    Initialization,
    /// The extrinsic at this index.
    Extrinsic(u32),
}

/// An event and when it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When.
    pub phase: Phase,
    /// What.
    pub event: Event,
}

/// Why a node received a penalty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyReason {
    /// Elected validator that proposed nothing.
    NoProposal,
    /// Elected validator whose proposal fell below the attestation minimum.
    InsufficientAttestations,
    /// Included/Validator node missing from or scored zero in an accepted
    /// score vector.
    NotScored,
    /// Snapshot node that did not attest a supermajority-accepted proposal.
    DidNotAttest,
}

/// Why a node left its subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// Its owner removed it.
    Voluntary,
    /// It reached `max_penalties`.
    Penalties,
    /// It was not activated within the grace period.
    RegistrationLapsed,
}

/// Everything that changes the state, one event per effect. JSON is
/// externally tagged: `{"transfer": {"from": .., "to": .., "amount": ..}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The block subsidy was minted.
    SubsidyMinted {
        /// Height.
        height: BlockNumber,
        /// Total minted.
        amount: Balance,
        /// The author's share.
        author_share: Balance,
    },
    /// A transaction fee was paid (after any refund).
    FeePaid {
        /// Payer.
        who: AccountId,
        /// Fee.
        amount: Balance,
        /// The author's share (the rest went to the vault).
        author_share: Balance,
    },
    /// An extrinsic's call succeeded.
    ExtrinsicSuccess,
    /// An extrinsic's call failed: it paid its fee and changed nothing else.
    ExtrinsicFailed {
        /// Why.
        error: Error,
    },
    /// Balance moved between accounts.
    Transfer {
        /// Sender.
        from: AccountId,
        /// Recipient.
        to: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// A subnet was registered.
    SubnetRegistered {
        /// Id.
        subnet: SubnetId,
        /// Owner.
        owner: AccountId,
        /// Name.
        name: String,
        /// Registration fee paid to the treasury.
        fee: Balance,
    },
    /// A subnet became active.
    SubnetActivated {
        /// Id.
        subnet: SubnetId,
    },
    /// A node was registered and its stake bonded.
    NodeRegistered {
        /// Subnet.
        subnet: SubnetId,
        /// Node id.
        node: NodeId,
        /// Owner.
        owner: AccountId,
        /// Peer id.
        peer_id: PeerId,
        /// Stake bonded.
        stake: Balance,
    },
    /// A node was activated.
    NodeActivated {
        /// Subnet.
        subnet: SubnetId,
        /// Node.
        node: NodeId,
        /// Its class now (Idle, or Validator for initial validators).
        class: NodeClass,
    },
    /// Stake was added to a node.
    StakeAdded {
        /// Subnet.
        subnet: SubnetId,
        /// Node.
        node: NodeId,
        /// Amount.
        amount: Balance,
    },
    /// Stake moved into unbonding.
    StakeUnbonding {
        /// Account that can claim it.
        account: AccountId,
        /// Subnet.
        subnet: SubnetId,
        /// Node.
        node: NodeId,
        /// Amount.
        amount: Balance,
        /// Epoch from which it can be claimed.
        claimable_epoch: Epoch,
    },
    /// A node left its subnet.
    NodeRemoved {
        /// Subnet.
        subnet: SubnetId,
        /// Node.
        node: NodeId,
        /// Why.
        reason: RemovalReason,
    },
    /// Matured unbonding returned to the free balance.
    Unbonded {
        /// Account.
        account: AccountId,
        /// Amount.
        amount: Balance,
    },
    /// A validator was elected for a subnet's epoch.
    ValidatorElected {
        /// Subnet.
        subnet: SubnetId,
        /// Epoch.
        epoch: Epoch,
        /// Elected node.
        node: NodeId,
        /// Size of the validator snapshot.
        validators: u32,
    },
    /// The elected validator proposed scores.
    AttestationProposed {
        /// Subnet.
        subnet: SubnetId,
        /// Epoch.
        epoch: Epoch,
        /// Proposer.
        node: NodeId,
        /// Number of scored nodes.
        scored: u32,
    },
    /// A validator attested the proposal.
    Attested {
        /// Subnet.
        subnet: SubnetId,
        /// Epoch.
        epoch: Epoch,
        /// Attester.
        node: NodeId,
    },
    /// A subnet's epoch was settled.
    EpochSettled {
        /// Subnet.
        subnet: SubnetId,
        /// Settled epoch.
        epoch: Epoch,
        /// Outcome.
        outcome: SettlementOutcome,
    },
    /// The EDA weight a subnet received.
    SubnetAllocation {
        /// Subnet.
        subnet: SubnetId,
        /// Settled epoch.
        epoch: Epoch,
        /// Initial (stake) weight.
        weight: Fixed,
        /// Allocated weight after the cap.
        allocation: Fixed,
        /// Base units allocated.
        amount: Balance,
    },
    /// A reward was paid to a node's owner.
    RewardPaid {
        /// Subnet.
        subnet: SubnetId,
        /// Node.
        node: NodeId,
        /// Owner credited.
        account: AccountId,
        /// Amount.
        amount: Balance,
        /// Whether this is the elected validator's share.
        validator_reward: bool,
    },
    /// Stake was slashed into the treasury.
    Slashed {
        /// Subnet.
        subnet: SubnetId,
        /// Node.
        node: NodeId,
        /// Amount.
        amount: Balance,
    },
    /// A node got a penalty.
    PenaltyAdded {
        /// Subnet.
        subnet: SubnetId,
        /// Node.
        node: NodeId,
        /// Why.
        reason: PenaltyReason,
        /// Its penalties now.
        penalties: u32,
    },
    /// A positive score cleared one penalty.
    PenaltyCleared {
        /// Subnet.
        subnet: SubnetId,
        /// Node.
        node: NodeId,
        /// Its penalties now.
        penalties: u32,
    },
    /// A node moved up a class.
    NodePromoted {
        /// Subnet.
        subnet: SubnetId,
        /// Node.
        node: NodeId,
        /// New class.
        class: NodeClass,
    },
}
