//! The calls (SPEC §3.3-3.4).
//!
//! Every call **checks everything first and mutates after**: once the first
//! write happens, nothing can fail any more. That is what makes a failed call
//! change nothing (SPEC §3.6: "never half-applied"). Each function below is
//! split accordingly by a `// --- effects ---` line.

use std::collections::BTreeMap;

use hypertensor_primitives::{AccountId, Balance, PeerId};

use crate::call::Call;
use crate::event::{Event, RemovalReason};
use crate::state::State;
use crate::types::{
    Epoch, EpochConsensus, NodeClass, NodeId, Subnet, SubnetId, SubnetNode, SubnetState,
};
use crate::{Error, Result};

impl State {
    /// Runs `call` for `signer`, appending its events. On error nothing
    /// changed and nothing was appended.
    pub(crate) fn dispatch(
        &mut self,
        signer: &AccountId,
        call: &Call,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        call.check_stateless(&self.params)?;
        match call {
            Call::Transfer { to, amount } => self.transfer(signer, to, *amount, events),
            Call::RegisterSubnet {
                name,
                model,
                min_stake,
                max_stake,
                initial_validators,
            } => self.register_subnet(
                signer,
                name,
                model,
                (*min_stake, *max_stake),
                initial_validators,
                events,
            ),
            Call::ActivateSubnet { subnet } => self.activate_subnet(signer, *subnet, events),
            Call::RegisterSubnetNode {
                subnet,
                hotkey,
                peer_id,
                client_peer_id,
                stake,
            } => self.register_subnet_node(
                signer,
                *subnet,
                hotkey,
                peer_id,
                client_peer_id.as_ref(),
                *stake,
                events,
            ),
            Call::ActivateSubnetNode { subnet, node } => {
                self.activate_subnet_node(signer, *subnet, *node, events)
            }
            Call::AddStake {
                subnet,
                node,
                amount,
            } => self.add_stake(signer, *subnet, *node, *amount, events),
            Call::RemoveStake {
                subnet,
                node,
                amount,
            } => self.remove_stake(signer, *subnet, *node, *amount, events),
            Call::RemoveSubnetNode { subnet, node } => {
                self.remove_subnet_node(signer, *subnet, *node, events)
            }
            Call::ClaimUnbonded => self.claim_unbonded(signer, events),
            Call::ProposeAttestation {
                subnet,
                epoch,
                scores,
            } => self.propose_attestation(signer, *subnet, *epoch, scores, events),
            Call::Attest { subnet, epoch } => self.attest(signer, *subnet, *epoch, events),
        }
    }

    fn require_free(&self, who: &AccountId, needed: Balance) -> Result<()> {
        let free = self.free(who);
        if free < needed {
            return Err(Error::InsufficientBalance { needed, free });
        }
        Ok(())
    }

    fn subnet_ref(&self, subnet: SubnetId) -> Result<&Subnet> {
        self.subnets
            .get(&subnet)
            .ok_or(Error::UnknownSubnet { subnet })
    }

    /// The node, checking the subnet exists and `signer` owns the node.
    fn owned_node(
        &self,
        signer: &AccountId,
        subnet: SubnetId,
        node: NodeId,
    ) -> Result<&SubnetNode> {
        let n = self
            .subnet_ref(subnet)?
            .nodes
            .get(&node)
            .ok_or(Error::UnknownNode { subnet, node })?;
        if n.owner != *signer {
            return Err(Error::NotNodeOwner { node });
        }
        Ok(n)
    }

    fn node_mut(&mut self, subnet: SubnetId, node: NodeId) -> Option<&mut SubnetNode> {
        self.subnets.get_mut(&subnet)?.nodes.get_mut(&node)
    }

    fn transfer(
        &mut self,
        from: &AccountId,
        to: &AccountId,
        amount: Balance,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        if from == to {
            return Err(Error::TransferToSelf);
        }
        self.require_free(from, amount)?;
        // --- effects ---
        self.account_mut(from).free -= amount;
        self.credit(to, amount);
        events.push(Event::Transfer {
            from: *from,
            to: *to,
            amount,
        });
        Ok(())
    }

    fn register_subnet(
        &mut self,
        owner: &AccountId,
        name: &str,
        model: &str,
        (min_stake, max_stake): (Balance, Balance),
        initial_validators: &[PeerId],
        events: &mut Vec<Event>,
    ) -> Result<()> {
        if self.subnets.len() >= self.params.max_subnets as usize {
            return Err(Error::TooManySubnets {
                max: self.params.max_subnets,
            });
        }
        if self.subnets.values().any(|s| s.name == name) {
            return Err(Error::SubnetNameTaken {
                name: name.to_string(),
            });
        }
        let fee = self.params.subnet_registration_fee;
        self.require_free(owner, fee)?;
        // --- effects ---
        self.account_mut(owner).free -= fee;
        self.treasury += fee;
        let id = self.next_subnet_id;
        self.next_subnet_id += 1;
        let epoch = self.epoch();
        self.subnets.insert(
            id,
            Subnet {
                id,
                name: name.to_string(),
                model: model.to_string(),
                owner: *owner,
                min_stake,
                max_stake,
                state: SubnetState::Registered,
                registered_epoch: epoch,
                activated_epoch: None,
                initial_validators: initial_validators.to_vec(),
                next_node_id: 1,
                nodes: BTreeMap::new(),
            },
        );
        events.push(Event::SubnetRegistered {
            subnet: id,
            owner: *owner,
            name: name.to_string(),
            fee,
        });
        Ok(())
    }

    fn activate_subnet(
        &mut self,
        signer: &AccountId,
        subnet: SubnetId,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let s = self.subnet_ref(subnet)?;
        if s.owner != *signer {
            return Err(Error::NotSubnetOwner { subnet });
        }
        if s.state == SubnetState::Active {
            return Err(Error::SubnetAlreadyActive { subnet });
        }
        let have = u32::try_from(s.activated_nodes()).unwrap_or(u32::MAX);
        let need = self.params.min_subnet_nodes;
        if have < need {
            return Err(Error::NotEnoughNodes { subnet, have, need });
        }
        // --- effects ---
        let epoch = self.epoch();
        if let Some(s) = self.subnets.get_mut(&subnet) {
            s.state = SubnetState::Active;
            s.activated_epoch = Some(epoch);
        }
        events.push(Event::SubnetActivated { subnet });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn register_subnet_node(
        &mut self,
        owner: &AccountId,
        subnet: SubnetId,
        hotkey: &AccountId,
        peer_id: &PeerId,
        client_peer_id: Option<&PeerId>,
        stake: Balance,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let max_nodes = self.params.max_nodes_per_subnet;
        let s = self.subnet_ref(subnet)?;
        if s.nodes.len() >= max_nodes as usize {
            return Err(Error::SubnetFull {
                subnet,
                max: max_nodes,
            });
        }
        if stake < s.min_stake || stake > s.max_stake {
            return Err(Error::StakeOutOfBounds {
                stake,
                min: s.min_stake,
                max: s.max_stake,
            });
        }
        for candidate in std::iter::once(peer_id).chain(client_peer_id) {
            if s.node_by_peer_id(candidate).is_some() {
                return Err(Error::PeerIdTaken {
                    peer_id: candidate.clone(),
                });
            }
        }
        if let Some(n) = s.node_by_hotkey(hotkey) {
            return Err(Error::HotkeyTaken { node: n.id });
        }
        self.require_free(owner, stake)?;
        // --- effects ---
        let start_epoch = self.epoch() + 1;
        self.account_mut(owner).free -= stake;
        let Some(s) = self.subnets.get_mut(&subnet) else {
            return Ok(()); // checked above
        };
        let id = s.next_node_id;
        s.next_node_id += 1;
        s.nodes.insert(
            id,
            SubnetNode {
                id,
                owner: *owner,
                hotkey: *hotkey,
                peer_id: peer_id.clone(),
                client_peer_id: client_peer_id.cloned(),
                stake,
                class: NodeClass::Registered,
                class_start_epoch: start_epoch - 1,
                start_epoch,
                penalties: 0,
                promotion_progress: 0,
            },
        );
        events.push(Event::NodeRegistered {
            subnet,
            node: id,
            owner: *owner,
            peer_id: peer_id.clone(),
            stake,
        });
        Ok(())
    }

    fn activate_subnet_node(
        &mut self,
        signer: &AccountId,
        subnet: SubnetId,
        node: NodeId,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let current = self.epoch();
        let s = self.subnet_ref(subnet)?;
        let n = s
            .nodes
            .get(&node)
            .ok_or(Error::UnknownNode { subnet, node })?;
        if n.owner != *signer && n.hotkey != *signer {
            return Err(Error::NotNodeOwner { node });
        }
        if n.class != NodeClass::Registered {
            return Err(Error::NodeAlreadyActivated { node });
        }
        if current < n.start_epoch {
            return Err(Error::ActivationTooEarly {
                start_epoch: n.start_epoch,
                current,
            });
        }
        // Registrations past their grace period were removed at the epoch
        // boundary, so a node found here is within its window.
        let class =
            if s.state == SubnetState::Registered && s.initial_validators.contains(&n.peer_id) {
                NodeClass::Validator
            } else {
                NodeClass::Idle
            };
        // --- effects ---
        if let Some(n) = self.node_mut(subnet, node) {
            n.class = class;
            // The first epoch spent entirely in the new class (see `epoch`).
            n.class_start_epoch = current + 1;
            n.promotion_progress = 0;
        }
        events.push(Event::NodeActivated {
            subnet,
            node,
            class,
        });
        Ok(())
    }

    fn add_stake(
        &mut self,
        signer: &AccountId,
        subnet: SubnetId,
        node: NodeId,
        amount: Balance,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let n = self.owned_node(signer, subnet, node)?;
        let s = self.subnet_ref(subnet)?;
        // Both are parts of the capped issuance: the sum cannot overflow.
        let stake = n.stake.saturating_add(amount);
        if stake > s.max_stake {
            return Err(Error::StakeOutOfBounds {
                stake,
                min: s.min_stake,
                max: s.max_stake,
            });
        }
        self.require_free(signer, amount)?;
        // --- effects ---
        self.account_mut(signer).free -= amount;
        if let Some(n) = self.node_mut(subnet, node) {
            n.stake = stake;
        }
        events.push(Event::StakeAdded {
            subnet,
            node,
            amount,
        });
        Ok(())
    }

    fn remove_stake(
        &mut self,
        signer: &AccountId,
        subnet: SubnetId,
        node: NodeId,
        amount: Balance,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let n = self.owned_node(signer, subnet, node)?;
        let min = self.subnet_ref(subnet)?.min_stake;
        let remaining = n.stake.saturating_sub(amount);
        if amount > n.stake || remaining < min {
            return Err(Error::StakeBelowMinimum { remaining, min });
        }
        // --- effects ---
        if let Some(n) = self.node_mut(subnet, node) {
            n.stake = remaining;
        }
        let claimable_epoch = self.epoch() + self.params.unbonding_epochs;
        self.add_unbonding(signer, claimable_epoch, amount);
        events.push(Event::StakeUnbonding {
            account: *signer,
            subnet,
            node,
            amount,
            claimable_epoch,
        });
        Ok(())
    }

    fn remove_subnet_node(
        &mut self,
        signer: &AccountId,
        subnet: SubnetId,
        node: NodeId,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        self.owned_node(signer, subnet, node)?;
        // --- effects ---
        self.remove_node(subnet, node, RemovalReason::Voluntary, events);
        Ok(())
    }

    /// Removes a node and sends all its stake to its owner's unbonding
    /// ledger. Used by the call and by the epoch hooks.
    pub(crate) fn remove_node(
        &mut self,
        subnet: SubnetId,
        node: NodeId,
        reason: RemovalReason,
        events: &mut Vec<Event>,
    ) {
        let Some(removed) = self
            .subnets
            .get_mut(&subnet)
            .and_then(|s| s.nodes.remove(&node))
        else {
            return;
        };
        let claimable_epoch = self.epoch() + self.params.unbonding_epochs;
        self.add_unbonding(&removed.owner, claimable_epoch, removed.stake);
        events.push(Event::NodeRemoved {
            subnet,
            node,
            reason,
        });
        if removed.stake > 0 {
            events.push(Event::StakeUnbonding {
                account: removed.owner,
                subnet,
                node,
                amount: removed.stake,
                claimable_epoch,
            });
        }
    }

    fn claim_unbonded(&mut self, signer: &AccountId, events: &mut Vec<Event>) -> Result<()> {
        let current = self.epoch();
        let matured: Balance = self
            .unbonding(signer)
            .iter()
            .filter(|e| e.claimable_epoch <= current)
            .map(|e| e.amount)
            .sum();
        if matured == 0 {
            return Err(Error::NothingToClaim);
        }
        // --- effects ---
        if let Some(ledger) = self.unbonding.get_mut(signer) {
            ledger.retain(|e| e.claimable_epoch > current);
            if ledger.is_empty() {
                self.unbonding.remove(signer);
            }
        }
        self.credit(signer, matured);
        events.push(Event::Unbonded {
            account: *signer,
            amount: matured,
        });
        Ok(())
    }

    /// The active subnet's consensus record of the current epoch.
    fn current_record(&self, subnet: SubnetId, epoch: Epoch) -> Result<&EpochConsensus> {
        let s = self.subnet_ref(subnet)?;
        if s.state != SubnetState::Active {
            return Err(Error::SubnetNotActive { subnet });
        }
        let current = self.epoch();
        if epoch != current {
            return Err(Error::WrongEpoch {
                given: epoch,
                current,
            });
        }
        self.consensus_data(subnet, epoch)
            .ok_or(Error::NoElectedValidator { subnet, epoch })
    }

    fn propose_attestation(
        &mut self,
        signer: &AccountId,
        subnet: SubnetId,
        epoch: Epoch,
        scores: &[(NodeId, u128)],
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let record = self.current_record(subnet, epoch)?;
        let elected = record.validator;
        let s = self.subnet_ref(subnet)?;
        if s.nodes.get(&elected).is_none_or(|n| n.hotkey != *signer) {
            return Err(Error::NotElectedValidator { elected });
        }
        if record.proposal.is_some() {
            return Err(Error::AlreadyProposed);
        }
        for (node, _) in scores {
            let n = s
                .nodes
                .get(node)
                .ok_or(Error::ScoredUnknownNode { node: *node })?;
            if !n.class.is_scored() {
                return Err(Error::ScoredIneligibleNode {
                    node: *node,
                    class: n.class,
                });
            }
        }
        // --- effects ---
        if let Some(record) = self
            .consensus
            .get_mut(&subnet)
            .and_then(|r| r.get_mut(&epoch))
        {
            record.proposal = Some(scores.to_vec());
            record.attestations.insert(elected);
        }
        events.push(Event::AttestationProposed {
            subnet,
            epoch,
            node: elected,
            scored: u32::try_from(scores.len()).unwrap_or(u32::MAX),
        });
        Ok(())
    }

    fn attest(
        &mut self,
        signer: &AccountId,
        subnet: SubnetId,
        epoch: Epoch,
        events: &mut Vec<Event>,
    ) -> Result<()> {
        let record = self.current_record(subnet, epoch)?;
        if record.proposal.is_none() {
            return Err(Error::NoProposal);
        }
        let node = self
            .subnet_ref(subnet)?
            .node_by_hotkey(signer)
            .map(|n| n.id)
            .filter(|id| record.snapshot.binary_search(id).is_ok())
            .ok_or(Error::NotInValidatorSet)?;
        if record.attestations.contains(&node) {
            return Err(Error::AlreadyAttested { node });
        }
        // --- effects ---
        if let Some(record) = self
            .consensus
            .get_mut(&subnet)
            .and_then(|r| r.get_mut(&epoch))
        {
            record.attestations.insert(node);
        }
        events.push(Event::Attested {
            subnet,
            epoch,
            node,
        });
        Ok(())
    }
}
