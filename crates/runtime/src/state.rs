//! The chain state and its read accessors.

use std::collections::BTreeMap;

use hypertensor_primitives::codec::Encode;
use hypertensor_primitives::{AccountId, Balance, Fixed, H256, PeerId, sha256};
use serde::{Deserialize, Serialize};

use crate::params::Params;
use crate::types::{
    Account, BlockNumber, Epoch, EpochConsensus, EpochInfo, NodeClass, NodeId, Subnet, SubnetId,
    SubnetNode, Totals, UnbondingEntry,
};

/// The whole chain state after some block.
///
/// Built by [`GenesisConfig::build`](crate::GenesisConfig::build) and
/// advanced only by [`apply_block`](crate::apply_block) or a
/// [`BlockBuilder`](crate::BlockBuilder). Every collection is a `BTreeMap`,
/// so iteration, encoding and hence the state root are deterministic.
///
/// It serializes with serde (for storage); after loading, compare
/// [`State::state_root`] with the stored header's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Hash of the genesis block: the network's identity, bound into every
    /// signature. Not part of the state root (it is derived from it).
    pub(crate) genesis_hash: H256,
    /// Hash of the latest block. Not part of the state root (the block
    /// header commits to the root).
    pub(crate) best_hash: H256,
    pub(crate) params: Params,
    pub(crate) height: BlockNumber,
    pub(crate) timestamp_ms: u64,
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    pub(crate) subnets: BTreeMap<SubnetId, Subnet>,
    pub(crate) next_subnet_id: SubnetId,
    pub(crate) unbonding: BTreeMap<AccountId, Vec<UnbondingEntry>>,
    pub(crate) consensus: BTreeMap<SubnetId, BTreeMap<Epoch, EpochConsensus>>,
    /// The chain validators (sorted by account), fixed by the genesis.
    #[serde(default)]
    pub(crate) chain_validators: Vec<crate::genesis::ChainValidator>,
    pub(crate) vault: Balance,
    pub(crate) treasury: Balance,
    pub(crate) total_issuance: Balance,
}

impl State {
    /// The genesis hash (network identity in signatures).
    pub fn genesis_hash(&self) -> H256 {
        self.genesis_hash
    }

    /// Hash of the latest block.
    pub fn best_hash(&self) -> H256 {
        self.best_hash
    }

    /// The chain parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Height of the latest block.
    pub fn height(&self) -> BlockNumber {
        self.height
    }

    /// The chain validators that finalize blocks, sorted by account.
    pub fn chain_validators(&self) -> &[crate::genesis::ChainValidator] {
        &self.chain_validators
    }

    /// Timestamp of the latest block (ms).
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// Epoch of the latest block.
    pub fn epoch(&self) -> Epoch {
        self.height / self.params.epoch_length
    }

    /// Epoch, progress and timing of the latest block.
    pub fn epoch_info(&self) -> EpochInfo {
        let length = self.params.epoch_length;
        let block_in_epoch = self.height % length;
        EpochInfo {
            height: self.height,
            epoch: self.epoch(),
            block_in_epoch,
            epoch_length: length,
            progress: Fixed::from_rational(u128::from(block_in_epoch), u128::from(length))
                .unwrap_or(Fixed::ZERO),
            next_epoch_height: (self.epoch() + 1) * length,
            block_time_ms: self.params.block_time_ms,
        }
    }

    /// An account (all zero if it never received anything).
    pub fn account(&self, who: &AccountId) -> Account {
        self.accounts.get(who).cloned().unwrap_or_default()
    }

    /// All accounts that exist, in id order.
    pub fn accounts(&self) -> impl Iterator<Item = (&AccountId, &Account)> {
        self.accounts.iter()
    }

    /// A subnet.
    pub fn subnet(&self, id: SubnetId) -> Option<&Subnet> {
        self.subnets.get(&id)
    }

    /// All subnets, by id.
    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets.values()
    }

    /// A node of a subnet.
    pub fn subnet_node(&self, subnet: SubnetId, node: NodeId) -> Option<&SubnetNode> {
        self.subnets.get(&subnet)?.nodes.get(&node)
    }

    /// The nodes of a subnet by id (empty if the subnet does not exist).
    pub fn subnet_nodes(&self, subnet: SubnetId) -> impl Iterator<Item = &SubnetNode> {
        self.subnets
            .get(&subnet)
            .into_iter()
            .flat_map(|s| s.nodes.values())
    }

    /// An account's unbonding entries.
    pub fn unbonding(&self, who: &AccountId) -> &[UnbondingEntry] {
        self.unbonding.get(who).map_or(&[], Vec::as_slice)
    }

    /// Consensus data of a subnet's epoch (the current one, or a settled one
    /// within `consensus_history_epochs`).
    pub fn consensus_data(&self, subnet: SubnetId, epoch: Epoch) -> Option<&EpochConsensus> {
        self.consensus.get(&subnet)?.get(&epoch)
    }

    /// The validator elected in a subnet for an epoch, if that node still
    /// exists.
    pub fn elected_validator(&self, subnet: SubnetId, epoch: Epoch) -> Option<&SubnetNode> {
        let record = self.consensus_data(subnet, epoch)?;
        self.subnet_node(subnet, record.validator)
    }

    /// Whether `peer_id` (a node's peer id or client peer id) belongs to a
    /// node of `subnet` whose class is at least `min_class`. This is the
    /// proof of stake the DHT and signed RPC check (SPEC §4).
    pub fn proof_of_stake(&self, subnet: SubnetId, peer_id: &PeerId, min_class: NodeClass) -> bool {
        self.subnets
            .get(&subnet)
            .and_then(|s| s.node_by_peer_id(peer_id))
            .is_some_and(|n| n.class >= min_class)
    }

    /// The rewards vault.
    pub fn vault(&self) -> Balance {
        self.vault
    }

    /// The treasury.
    pub fn treasury(&self) -> Balance {
        self.treasury
    }

    /// Total issuance: every unit ever minted.
    pub fn total_issuance(&self) -> Balance {
        self.total_issuance
    }

    /// Issuance and where it is (sums over all accounts, nodes and
    /// unbonding entries: O(state)).
    pub fn totals(&self) -> Totals {
        let free = self.accounts.values().map(|a| a.free).sum();
        let staked = self
            .subnets
            .values()
            .flat_map(|s| s.nodes.values())
            .map(|n| n.stake)
            .sum();
        let unbonding = self.unbonding.values().flatten().map(|e| e.amount).sum();
        Totals {
            issuance: self.total_issuance,
            free,
            staked,
            unbonding,
            vault: self.vault,
            treasury: self.treasury,
        }
    }

    /// Checks SPEC §3.2's invariant: `total_issuance == Σ free + Σ stake +
    /// Σ unbonding + vault + treasury <= target_max_supply`. Returns the
    /// totals, or a description of the violation.
    pub fn check_invariants(&self) -> std::result::Result<Totals, String> {
        let totals = self.totals();
        if totals.accounted() != Some(totals.issuance) {
            return Err(format!("issuance not conserved: {totals:?}"));
        }
        if totals.issuance > self.params.target_max_supply {
            return Err(format!(
                "issuance {} above target_max_supply {}",
                totals.issuance, self.params.target_max_supply
            ));
        }
        Ok(totals)
    }

    /// The state root: SHA-256 of `b"hypertensor/state/v1"` followed by the
    /// canonical encoding of every field except the genesis and best hashes.
    pub fn state_root(&self) -> H256 {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(b"hypertensor/state/v1");
        encode_params(&self.params, &mut out);
        self.height.encode_to(&mut out);
        self.timestamp_ms.encode_to(&mut out);
        self.accounts.encode_to(&mut out);
        self.subnets.encode_to(&mut out);
        self.next_subnet_id.encode_to(&mut out);
        self.unbonding.encode_to(&mut out);
        self.consensus.encode_to(&mut out);
        self.chain_validators.encode_to(&mut out);
        self.vault.encode_to(&mut out);
        self.treasury.encode_to(&mut out);
        self.total_issuance.encode_to(&mut out);
        sha256(&[&out])
    }

    // ----- crate-internal helpers -----

    pub(crate) fn account_mut(&mut self, who: &AccountId) -> &mut Account {
        self.accounts.entry(*who).or_default()
    }

    pub(crate) fn free(&self, who: &AccountId) -> Balance {
        self.accounts.get(who).map_or(0, |a| a.free)
    }

    /// Adds to a free balance. Cannot overflow: every balance is part of
    /// total issuance, which is capped far below `u128::MAX`.
    pub(crate) fn credit(&mut self, who: &AccountId, amount: Balance) {
        let account = self.account_mut(who);
        account.free = account.free.saturating_add(amount);
    }

    /// Puts `amount` into `who`'s unbonding ledger, claimable at `epoch`
    /// (entries of the same epoch are merged, so the ledger stays short).
    pub(crate) fn add_unbonding(&mut self, who: &AccountId, epoch: Epoch, amount: Balance) {
        if amount == 0 {
            return;
        }
        let ledger = self.unbonding.entry(*who).or_default();
        match ledger.iter_mut().find(|e| e.claimable_epoch == epoch) {
            Some(entry) => entry.amount = entry.amount.saturating_add(amount),
            None => ledger.push(UnbondingEntry {
                claimable_epoch: epoch,
                amount,
            }),
        }
    }
}

/// Canonical encoding of the parameters, in field order. The destructuring
/// makes a new field a compile error here until it is encoded.
fn encode_params(p: &Params, out: &mut Vec<u8>) {
    let Params {
        block_time_ms,
        epoch_length,
        target_max_supply,
        halving_interval,
        block_author_share,
        max_subnets,
        max_nodes_per_subnet,
        max_subnet_rewards_weight,
        subnet_registration_fee,
        min_stake,
        max_stake,
        unbonding_epochs,
        activation_grace_epochs,
        idle_epochs,
        included_epochs,
        min_attestation_ratio,
        supermajority_ratio,
        validator_reward_share,
        stake_rewards_weight,
        slash_base,
        max_slash,
        max_penalties,
        tx_base_fee,
        min_subnet_nodes,
        max_initial_validators,
        max_name_length,
        max_model_length,
        max_block_extrinsics,
        max_future_nonces,
        consensus_history_epochs,
    } = p;
    block_time_ms.encode_to(out);
    epoch_length.encode_to(out);
    target_max_supply.encode_to(out);
    halving_interval.encode_to(out);
    block_author_share.encode_to(out);
    max_subnets.encode_to(out);
    max_nodes_per_subnet.encode_to(out);
    max_subnet_rewards_weight.encode_to(out);
    subnet_registration_fee.encode_to(out);
    min_stake.encode_to(out);
    max_stake.encode_to(out);
    unbonding_epochs.encode_to(out);
    activation_grace_epochs.encode_to(out);
    idle_epochs.encode_to(out);
    included_epochs.encode_to(out);
    min_attestation_ratio.encode_to(out);
    supermajority_ratio.encode_to(out);
    validator_reward_share.encode_to(out);
    stake_rewards_weight.encode_to(out);
    slash_base.encode_to(out);
    max_slash.encode_to(out);
    max_penalties.encode_to(out);
    tx_base_fee.encode_to(out);
    min_subnet_nodes.encode_to(out);
    max_initial_validators.encode_to(out);
    max_name_length.encode_to(out);
    max_model_length.encode_to(out);
    max_block_extrinsics.encode_to(out);
    max_future_nonces.encode_to(out);
    consensus_history_epochs.encode_to(out);
}
