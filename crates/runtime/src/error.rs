//! The runtime's one error type.
//!
//! Variants fall in three groups:
//!
//! * **call errors**: a call's checks failed. Inside a block the extrinsic
//!   is still included, pays its fee and bumps its nonce, changes nothing
//!   else, and is reported as `Event::ExtrinsicFailed`.
//! * **transaction errors** (`BadSignature`, `StaleNonce`, `FutureNonce`,
//!   `CannotPayFee`, `BlockFull`): the extrinsic cannot be included at all.
//!   A transaction pool rejects it at submission; a block containing it is
//!   invalid.
//! * **block errors** (`InvalidParams`, `InvalidGenesis`, `WrongHeight`,
//!   `WrongParent`, `TimestampBeforeParent`, `ExtrinsicsRootMismatch`,
//!   `StateRootMismatch`, `InvalidExtrinsic`): the block is refused and the
//!   state stays as it was.
//!
//! Errors serialize externally tagged: `"zero_amount"` for variants without
//! data, `{"insufficient_balance": {"needed": .., "free": ..}}` otherwise
//! (internally tagged enums cannot carry `u128` through serde).

use hypertensor_primitives::{Balance, H256, PeerId};
use serde::{Deserialize, Serialize};

use crate::types::{BlockNumber, Epoch, NodeClass, NodeId, SubnetId};

/// Everything the runtime can refuse, by name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Error {
    // ----- call errors -----
    /// An amount of zero where a positive amount is required.
    #[error("amount must be positive")]
    ZeroAmount,
    /// A transfer to the sender itself.
    #[error("cannot transfer to yourself")]
    TransferToSelf,
    /// The signer's free balance is below what the call needs.
    #[error("insufficient balance: needs {needed}, has {free}")]
    InsufficientBalance {
        /// Base units needed.
        needed: Balance,
        /// Free balance.
        free: Balance,
    },
    /// The subnet name is empty, too long or has control characters.
    #[error("invalid subnet name: {reason}")]
    InvalidSubnetName {
        /// What was wrong.
        reason: String,
    },
    /// The model reference is empty, too long or has control characters.
    #[error("invalid model reference: {reason}")]
    InvalidModel {
        /// What was wrong.
        reason: String,
    },
    /// A subnet with this name exists.
    #[error("subnet name `{name}` is taken")]
    SubnetNameTaken {
        /// The name.
        name: String,
    },
    /// A subnet's stake bounds are inverted or outside the network bounds.
    #[error(
        "stake bounds [{min}, {max}] invalid: need {network_min} <= min <= max <= {network_max}"
    )]
    InvalidStakeBounds {
        /// Requested minimum.
        min: Balance,
        /// Requested maximum.
        max: Balance,
        /// Network lower bound.
        network_min: Balance,
        /// Network upper bound.
        network_max: Balance,
    },
    /// More initial validators than allowed.
    #[error("{count} initial validators named, at most {max} allowed")]
    TooManyInitialValidators {
        /// How many were named.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// The same peer id named twice as initial validator.
    #[error("initial validator {peer_id} named twice")]
    DuplicateInitialValidator {
        /// The repeated peer id.
        peer_id: PeerId,
    },
    /// `max_subnets` subnets exist already.
    #[error("the network already has the maximum of {max} subnets")]
    TooManySubnets {
        /// The limit.
        max: u32,
    },
    /// No subnet with this id.
    #[error("unknown subnet {subnet}")]
    UnknownSubnet {
        /// The id.
        subnet: SubnetId,
    },
    /// The signer does not own the subnet.
    #[error("only the owner of subnet {subnet} may do this")]
    NotSubnetOwner {
        /// The subnet.
        subnet: SubnetId,
    },
    /// The subnet is active already.
    #[error("subnet {subnet} is already active")]
    SubnetAlreadyActive {
        /// The subnet.
        subnet: SubnetId,
    },
    /// Too few activated nodes to activate the subnet.
    #[error("subnet {subnet} has {have} activated nodes, needs {need}")]
    NotEnoughNodes {
        /// The subnet.
        subnet: SubnetId,
        /// Activated nodes.
        have: u32,
        /// Required.
        need: u32,
    },
    /// The subnet is not active (no elections, no consensus calls).
    #[error("subnet {subnet} is not active")]
    SubnetNotActive {
        /// The subnet.
        subnet: SubnetId,
    },
    /// The subnet has `max_nodes_per_subnet` nodes.
    #[error("subnet {subnet} is full ({max} nodes)")]
    SubnetFull {
        /// The subnet.
        subnet: SubnetId,
        /// The limit.
        max: u32,
    },
    /// A node's stake would leave the subnet's bounds.
    #[error("stake {stake} outside the subnet's bounds [{min}, {max}]")]
    StakeOutOfBounds {
        /// Resulting stake.
        stake: Balance,
        /// Subnet minimum.
        min: Balance,
        /// Subnet maximum.
        max: Balance,
    },
    /// The peer id is already used by a node of the subnet.
    #[error("peer id {peer_id} is already registered in this subnet")]
    PeerIdTaken {
        /// The peer id.
        peer_id: PeerId,
    },
    /// The hotkey is already used by a node of the subnet.
    #[error("hotkey is already used by node {node} of this subnet")]
    HotkeyTaken {
        /// The node using it.
        node: NodeId,
    },
    /// No node with this id in the subnet.
    #[error("unknown node {node} in subnet {subnet}")]
    UnknownNode {
        /// The subnet.
        subnet: SubnetId,
        /// The node id.
        node: NodeId,
    },
    /// The signer is neither the node's owner nor (where allowed) its hotkey.
    #[error("signer does not control node {node}")]
    NotNodeOwner {
        /// The node.
        node: NodeId,
    },
    /// The node was activated already.
    #[error("node {node} is already activated")]
    NodeAlreadyActivated {
        /// The node.
        node: NodeId,
    },
    /// Activation before the registration's start epoch.
    #[error("node can be activated from epoch {start_epoch}, current epoch is {current}")]
    ActivationTooEarly {
        /// First allowed epoch.
        start_epoch: Epoch,
        /// Current epoch.
        current: Epoch,
    },
    /// Removing this much stake would leave less than the subnet minimum.
    #[error("remaining stake {remaining} would be below the minimum {min}")]
    StakeBelowMinimum {
        /// Stake after removal (0 if the amount exceeds the stake).
        remaining: Balance,
        /// Subnet minimum.
        min: Balance,
    },
    /// No unbonding entry has matured.
    #[error("nothing to claim yet")]
    NothingToClaim,
    /// A consensus call for another epoch than the current one.
    #[error("call is for epoch {given}, current epoch is {current}")]
    WrongEpoch {
        /// Epoch in the call.
        given: Epoch,
        /// Current epoch.
        current: Epoch,
    },
    /// No validator was elected in the subnet this epoch.
    #[error("no validator was elected in subnet {subnet} for epoch {epoch}")]
    NoElectedValidator {
        /// The subnet.
        subnet: SubnetId,
        /// The epoch.
        epoch: Epoch,
    },
    /// The signer is not the hotkey of the elected validator.
    #[error("signer is not the elected validator (node {elected})")]
    NotElectedValidator {
        /// The elected node.
        elected: NodeId,
    },
    /// The epoch's proposal was made already.
    #[error("a proposal was already made for this epoch")]
    AlreadyProposed,
    /// More scores than nodes a subnet may have.
    #[error("{count} scores given, at most {max} allowed")]
    TooManyScores {
        /// Number given.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// Score node ids not strictly ascending (unsorted or duplicated).
    #[error("scores must be sorted by node id without duplicates (entry {index})")]
    ScoresNotSorted {
        /// Index of the first offending entry.
        index: u32,
    },
    /// The scores' sum exceeds `u128`.
    #[error("the sum of scores overflows")]
    ScoreSumOverflow,
    /// A score for a node that is not in the subnet.
    #[error("score for unknown node {node}")]
    ScoredUnknownNode {
        /// The node id.
        node: NodeId,
    },
    /// A score for a node that is not Included or Validator.
    #[error("node {node} of class {class:?} cannot be scored")]
    ScoredIneligibleNode {
        /// The node id.
        node: NodeId,
        /// Its class.
        class: NodeClass,
    },
    /// Attesting before the proposal.
    #[error("nothing to attest: no proposal yet")]
    NoProposal,
    /// The signer's node is not in the epoch's validator snapshot.
    #[error("signer is not in the validator set of this epoch")]
    NotInValidatorSet,
    /// The node attested already.
    #[error("node {node} already attested")]
    AlreadyAttested {
        /// The node.
        node: NodeId,
    },

    // ----- transaction errors -----
    /// The signature does not verify for this network (genesis hash) and
    /// payload.
    #[error("bad signature")]
    BadSignature,
    /// The nonce was used already.
    #[error("stale nonce {got}, expected {expected}")]
    StaleNonce {
        /// Account nonce.
        expected: u64,
        /// Extrinsic nonce.
        got: u64,
    },
    /// The nonce is ahead of the account (in a block: not the next one; in
    /// a pool: too far ahead).
    #[error("future nonce {got}, expected {expected}")]
    FutureNonce {
        /// Account nonce.
        expected: u64,
        /// Extrinsic nonce.
        got: u64,
    },
    /// The signer cannot pay the transaction fee.
    #[error("cannot pay the fee {fee}: free balance {free}")]
    CannotPayFee {
        /// The fee.
        fee: Balance,
        /// Free balance.
        free: Balance,
    },
    /// The block holds `max_block_extrinsics` extrinsics.
    #[error("block is full ({max} extrinsics)")]
    BlockFull {
        /// The limit.
        max: u32,
    },

    // ----- block and genesis errors -----
    /// Parameters that cannot run a chain.
    #[error("invalid parameters: {reason}")]
    InvalidParams {
        /// Which parameter and why.
        reason: String,
    },
    /// A genesis configuration that cannot be built.
    #[error("invalid genesis: {reason}")]
    InvalidGenesis {
        /// What was wrong.
        reason: String,
    },
    /// The block is not the next one.
    #[error("block height {got}, expected {expected}")]
    WrongHeight {
        /// Next height.
        expected: BlockNumber,
        /// Block's height.
        got: BlockNumber,
    },
    /// The block does not build on the current head.
    #[error("parent hash {got} is not the head {expected}")]
    WrongParent {
        /// Head hash.
        expected: H256,
        /// Block's parent hash.
        got: H256,
    },
    /// The block's timestamp is before its parent's.
    #[error("timestamp {got} is before the parent's {parent}")]
    TimestampBeforeParent {
        /// Parent timestamp (ms).
        parent: u64,
        /// Block timestamp (ms).
        got: u64,
    },
    /// The header's extrinsics root does not match its extrinsics.
    #[error("extrinsics root mismatch: header {header}, computed {computed}")]
    ExtrinsicsRootMismatch {
        /// Root in the header.
        header: H256,
        /// Root of the extrinsics.
        computed: H256,
    },
    /// The header's state root does not match the state after execution.
    #[error("state root mismatch: header {header}, computed {computed}")]
    StateRootMismatch {
        /// Root in the header.
        header: H256,
        /// Root after execution.
        computed: H256,
    },
    /// An extrinsic of the block cannot be included.
    #[error("extrinsic {index} is invalid: {reason}")]
    InvalidExtrinsic {
        /// Its index in the block.
        index: u32,
        /// Why.
        reason: Box<Error>,
    },
}

/// Result alias of the runtime.
pub type Result<T> = std::result::Result<T, Error>;
