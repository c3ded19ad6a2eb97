//! Epoch boundary processing (SPEC §3.3-3.5), run at the first block of each
//! epoch `e`, in this order:
//!
//! 1. settle epoch `e - 1` of every active subnet with an election:
//!    outcome, slashing, penalties, promotion progress; then the EDA over
//!    the in-consensus subnets and the rewards;
//! 2. remove nodes that reached `max_penalties` (stake to unbonding);
//! 3. promote nodes whose progress is complete;
//! 4. remove registrations whose activation window has passed;
//! 5. drop consensus data older than `consensus_history_epochs`;
//! 6. elect each active subnet's validator for `e` and snapshot the set.
//!
//! # Promotion progress
//!
//! `class_start_epoch` is the first epoch a node spends *entirely* in its
//! class: promotions at the boundary of `e` set it to `e`; an activation
//! during `e` sets it to `e + 1`. An epoch counts toward promotion only if
//! `class_start_epoch <= epoch`. An Idle node counts each such epoch in
//! which the subnet was in consensus (`idle_epochs` needed). An Included node
//! counts consecutive in-consensus epochs in which it had a positive score
//! (`included_epochs` needed); any other settled epoch resets its count.
//!
//! # Decisions beyond the SPEC
//!
//! * With all scores zero (the "hold rewards" signal) nothing is paid and no
//!   node is penalized for a zero score; non-attesters still are.
//! * A node removed during the epoch cannot be penalized or slashed any more;
//!   the attestation ratio still counts it in the snapshot.
//! * A validator reward whose node was removed stays in the vault.

use std::collections::BTreeMap;

use hypertensor_primitives::{Balance, Fixed, H256, mul_div};

use crate::eda::excess_distribution;
use crate::election::{election_seed, uniform_index};
use crate::event::{Event, PenaltyReason, RemovalReason};
use crate::state::State;
use crate::types::{
    Epoch, EpochConsensus, NodeClass, NodeId, SettlementOutcome, SubnetId, SubnetState,
};

/// An in-consensus subnet waiting for its share of the vault.
struct Payable {
    subnet: SubnetId,
    validator: NodeId,
    ratio: Fixed,
    /// `(node, stake, score)` of nodes with a positive score.
    scored: Vec<(NodeId, Balance, u128)>,
    stake_sum: Balance,
    score_sum: u128,
}

impl State {
    /// Everything that happens at the first block of epoch `epoch`.
    pub(crate) fn on_epoch_start(
        &mut self,
        epoch: Epoch,
        parent_hash: &H256,
        events: &mut Vec<Event>,
    ) {
        if epoch > 0 {
            self.settle(epoch - 1, events);
            self.remove_penalized(events);
            self.promote(epoch, events);
        }
        self.lapse_registrations(epoch, events);
        self.prune_consensus(epoch);
        self.elect(epoch, parent_hash, events);
    }

    fn settle(&mut self, settled: Epoch, events: &mut Vec<Event>) {
        let mut outcomes: BTreeMap<SubnetId, SettlementOutcome> = BTreeMap::new();
        let mut payable = Vec::new();
        let records: Vec<EpochConsensus> = self
            .subnets
            .values()
            .filter(|s| s.state == SubnetState::Active)
            .filter_map(|s| self.consensus_data(s.id, settled).cloned())
            .collect();
        for record in records {
            let subnet = record.subnet;
            let ratio = Fixed::from_rational(
                record.attestations.len() as u128,
                record.snapshot.len() as u128,
            )
            .unwrap_or(Fixed::ZERO);
            let outcome = match &record.proposal {
                None => {
                    self.penalize(subnet, record.validator, PenaltyReason::NoProposal, events);
                    self.reset_included_progress(subnet);
                    SettlementOutcome::NoProposal
                }
                Some(_) if ratio < self.params.min_attestation_ratio => {
                    let slashed = self.slash(subnet, record.validator, ratio, events);
                    self.penalize(
                        subnet,
                        record.validator,
                        PenaltyReason::InsufficientAttestations,
                        events,
                    );
                    self.reset_included_progress(subnet);
                    SettlementOutcome::BelowMinAttestation { ratio, slashed }
                }
                Some(scores) => {
                    let entry = self.settle_in_consensus(&record, scores, ratio, settled, events);
                    match entry {
                        Some(p) => {
                            payable.push(p);
                            SettlementOutcome::InConsensus {
                                ratio,
                                allocation: 0,
                            }
                        }
                        None => SettlementOutcome::HeldRewards { ratio },
                    }
                }
            };
            outcomes.insert(subnet, outcome);
        }

        // The Excess Distribution Algorithm over the vault as it is now.
        let stakes: Vec<(SubnetId, Balance)> =
            payable.iter().map(|p| (p.subnet, p.stake_sum)).collect();
        let allocations =
            excess_distribution(self.params.max_subnet_rewards_weight, &stakes, self.vault);
        for alloc in allocations {
            let Some(p) = payable.iter().find(|p| p.subnet == alloc.subnet) else {
                continue;
            };
            events.push(Event::SubnetAllocation {
                subnet: alloc.subnet,
                epoch: settled,
                weight: alloc.weight,
                allocation: alloc.allocation,
                amount: alloc.amount,
            });
            self.pay(p, alloc.amount, events);
            if let Some(SettlementOutcome::InConsensus { allocation, .. }) =
                outcomes.get_mut(&alloc.subnet)
            {
                *allocation = alloc.amount;
            }
        }

        for (subnet, outcome) in outcomes {
            if let Some(record) = self
                .consensus
                .get_mut(&subnet)
                .and_then(|r| r.get_mut(&settled))
            {
                record.outcome = Some(outcome.clone());
            }
            events.push(Event::EpochSettled {
                subnet,
                epoch: settled,
                outcome,
            });
        }
    }

    /// Penalties and promotion progress of an accepted proposal; returns the
    /// subnet's claim on the vault unless every score is zero.
    fn settle_in_consensus(
        &mut self,
        record: &EpochConsensus,
        scores: &[(NodeId, u128)],
        ratio: Fixed,
        settled: Epoch,
        events: &mut Vec<Event>,
    ) -> Option<Payable> {
        let subnet = record.subnet;
        let score_of = |node: NodeId| {
            scores
                .binary_search_by_key(&node, |(id, _)| *id)
                .map_or(0, |i| scores[i].1)
        };
        let mut scored = Vec::new();
        let mut unscored = Vec::new();
        for n in self.subnet_nodes(subnet).filter(|n| n.class.is_scored()) {
            match score_of(n.id) {
                0 => unscored.push(n.id),
                s => scored.push((n.id, n.stake, s)),
            }
        }
        let score_sum: u128 = scored.iter().map(|(_, _, s)| *s).sum();
        let stake_sum: Balance = scored.iter().map(|(_, s, _)| *s).sum();
        let hold = score_sum == 0;
        if !hold {
            for node in &unscored {
                self.penalize(subnet, *node, PenaltyReason::NotScored, events);
            }
        }
        for (node, _, _) in &scored {
            self.clear_penalty(subnet, *node, events);
        }
        if ratio >= self.params.supermajority_ratio {
            for node in &record.snapshot {
                if !record.attestations.contains(node) {
                    self.penalize(subnet, *node, PenaltyReason::DidNotAttest, events);
                }
            }
        }
        // Promotion progress of an in-consensus epoch.
        if let Some(s) = self.subnets.get_mut(&subnet) {
            for n in s.nodes.values_mut() {
                if n.class_start_epoch > settled {
                    continue;
                }
                match n.class {
                    NodeClass::Idle => n.promotion_progress += 1,
                    NodeClass::Included if score_of(n.id) > 0 => n.promotion_progress += 1,
                    NodeClass::Included => n.promotion_progress = 0,
                    NodeClass::Registered | NodeClass::Validator => {}
                }
            }
        }
        (!hold).then_some(Payable {
            subnet,
            validator: record.validator,
            ratio,
            scored,
            stake_sum,
            score_sum,
        })
    }

    /// Pays a subnet's allocation out of the vault: the elected validator's
    /// share, then stake- and score-weighted node rewards. Rounding dust and
    /// the share of a removed validator stay in the vault.
    fn pay(&mut self, p: &Payable, amount: Balance, events: &mut Vec<Event>) {
        let validator_part = p
            .ratio
            .mul_floor_unit(self.params.validator_reward_share.mul_floor_unit(amount));
        let rest = amount - validator_part;
        let stake_part = self.params.stake_rewards_weight.mul_floor_unit(rest);
        let score_part = rest - stake_part;
        let mut paid: Balance = 0;
        let mut credits = Vec::with_capacity(p.scored.len() + 1);
        if let Some(v) = self.subnet_node(p.subnet, p.validator) {
            credits.push((v.id, v.owner, validator_part, true));
        }
        for (node, stake, score) in &p.scored {
            // stake <= stake_sum and score <= score_sum: both quotients fit.
            let by_stake = mul_div(stake_part, *stake, p.stake_sum).unwrap_or(0);
            let by_score = mul_div(score_part, *score, p.score_sum).unwrap_or(0);
            if let Some(n) = self.subnet_node(p.subnet, *node) {
                credits.push((*node, n.owner, by_stake + by_score, false));
            }
        }
        for (node, account, reward, validator_reward) in credits {
            if reward == 0 {
                continue;
            }
            self.credit(&account, reward);
            paid += reward;
            events.push(Event::RewardPaid {
                subnet: p.subnet,
                node,
                account,
                amount: reward,
                validator_reward,
            });
        }
        // paid <= amount <= vault by construction.
        self.vault -= paid;
    }

    /// Slashes the elected validator of a failed proposal:
    /// `min(stake * slash_base * (1 - ratio / min_attestation_ratio), max_slash)`.
    fn slash(
        &mut self,
        subnet: SubnetId,
        node: NodeId,
        ratio: Fixed,
        events: &mut Vec<Event>,
    ) -> Balance {
        let min_ratio = self.params.min_attestation_ratio;
        let shortfall =
            Fixed::ONE.saturating_sub(ratio.checked_div(min_ratio).unwrap_or(Fixed::ONE));
        let slash_base = self.params.slash_base;
        let max_slash = self.params.max_slash;
        let Some(n) = self
            .subnets
            .get_mut(&subnet)
            .and_then(|s| s.nodes.get_mut(&node))
        else {
            return 0;
        };
        let amount = shortfall
            .mul_floor_unit(slash_base.mul_floor_unit(n.stake))
            .min(max_slash);
        if amount == 0 {
            return 0;
        }
        n.stake -= amount;
        self.treasury += amount;
        events.push(Event::Slashed {
            subnet,
            node,
            amount,
        });
        amount
    }

    fn penalize(
        &mut self,
        subnet: SubnetId,
        node: NodeId,
        reason: PenaltyReason,
        events: &mut Vec<Event>,
    ) {
        if let Some(n) = self
            .subnets
            .get_mut(&subnet)
            .and_then(|s| s.nodes.get_mut(&node))
        {
            n.penalties = n.penalties.saturating_add(1);
            events.push(Event::PenaltyAdded {
                subnet,
                node,
                reason,
                penalties: n.penalties,
            });
        }
    }

    fn clear_penalty(&mut self, subnet: SubnetId, node: NodeId, events: &mut Vec<Event>) {
        if let Some(n) = self
            .subnets
            .get_mut(&subnet)
            .and_then(|s| s.nodes.get_mut(&node))
            && n.penalties > 0
        {
            n.penalties -= 1;
            events.push(Event::PenaltyCleared {
                subnet,
                node,
                penalties: n.penalties,
            });
        }
    }

    /// A settled epoch out of consensus breaks Included nodes' streaks.
    fn reset_included_progress(&mut self, subnet: SubnetId) {
        if let Some(s) = self.subnets.get_mut(&subnet) {
            for n in s
                .nodes
                .values_mut()
                .filter(|n| n.class == NodeClass::Included)
            {
                n.promotion_progress = 0;
            }
        }
    }

    fn remove_penalized(&mut self, events: &mut Vec<Event>) {
        let max = self.params.max_penalties;
        let doomed: Vec<(SubnetId, NodeId)> = self
            .subnets
            .values()
            .flat_map(|s| s.nodes.values().map(move |n| (s.id, n)))
            .filter(|(_, n)| n.penalties >= max)
            .map(|(s, n)| (s, n.id))
            .collect();
        for (subnet, node) in doomed {
            self.remove_node(subnet, node, RemovalReason::Penalties, events);
        }
    }

    fn promote(&mut self, epoch: Epoch, events: &mut Vec<Event>) {
        let (idle_epochs, included_epochs) = (self.params.idle_epochs, self.params.included_epochs);
        for s in self.subnets.values_mut() {
            for n in s.nodes.values_mut() {
                let next = match n.class {
                    NodeClass::Idle if n.promotion_progress >= idle_epochs => NodeClass::Included,
                    NodeClass::Included if n.promotion_progress >= included_epochs => {
                        NodeClass::Validator
                    }
                    _ => continue,
                };
                n.class = next;
                n.class_start_epoch = epoch;
                n.promotion_progress = 0;
                events.push(Event::NodePromoted {
                    subnet: s.id,
                    node: n.id,
                    class: next,
                });
            }
        }
    }

    fn lapse_registrations(&mut self, epoch: Epoch, events: &mut Vec<Event>) {
        let grace = self.params.activation_grace_epochs;
        let lapsed: Vec<(SubnetId, NodeId)> = self
            .subnets
            .values()
            .flat_map(|s| s.nodes.values().map(move |n| (s.id, n)))
            .filter(|(_, n)| n.class == NodeClass::Registered && n.start_epoch + grace < epoch)
            .map(|(s, n)| (s, n.id))
            .collect();
        for (subnet, node) in lapsed {
            self.remove_node(subnet, node, RemovalReason::RegistrationLapsed, events);
        }
    }

    fn prune_consensus(&mut self, epoch: Epoch) {
        let keep = self.params.consensus_history_epochs;
        for records in self.consensus.values_mut() {
            records.retain(|e, _| e + keep >= epoch);
        }
        self.consensus.retain(|_, records| !records.is_empty());
    }

    /// Elects each active subnet's validator for `epoch` (SPEC §3.4).
    pub(crate) fn elect(&mut self, epoch: Epoch, parent_hash: &H256, events: &mut Vec<Event>) {
        let mut records = Vec::new();
        for s in self
            .subnets
            .values()
            .filter(|s| s.state == SubnetState::Active)
        {
            let snapshot: Vec<NodeId> = s
                .nodes
                .values()
                .filter(|n| n.class == NodeClass::Validator)
                .map(|n| n.id)
                .collect();
            let Some(index) =
                uniform_index(election_seed(parent_hash, s.id, epoch), snapshot.len())
            else {
                continue; // no Validator-class node: no election this epoch
            };
            records.push(EpochConsensus {
                subnet: s.id,
                epoch,
                validator: snapshot[index],
                snapshot,
                proposal: None,
                attestations: Default::default(),
                outcome: None,
            });
        }
        for record in records {
            events.push(Event::ValidatorElected {
                subnet: record.subnet,
                epoch,
                node: record.validator,
                validators: u32::try_from(record.snapshot.len()).unwrap_or(u32::MAX),
            });
            self.consensus
                .entry(record.subnet)
                .or_default()
                .insert(epoch, record);
        }
    }
}
