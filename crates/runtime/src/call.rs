//! The calls an extrinsic can make (SPEC §3.3-3.4), their canonical
//! encoding, and the checks that need no state.

use hypertensor_primitives::codec::Encode;
use hypertensor_primitives::{AccountId, Balance, PeerId};
use serde::{Deserialize, Serialize};

use crate::params::Params;
use crate::types::{Epoch, NodeId, SubnetId};
use crate::{Error, Result};

/// A call of the chain. In JSON (externally tagged, so `u128` amounts
/// deserialize exactly): `{"transfer": {"to": "0x..", "amount": 5}}`, and
/// `"claim_unbonded"` for the call without arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    /// Move `amount` of the signer's free balance to `to`.
    Transfer {
        /// Recipient.
        to: AccountId,
        /// Base units.
        amount: Balance,
    },
    /// Register a subnet owned by the signer, paying the registration fee to
    /// the treasury.
    RegisterSubnet {
        /// Unique name.
        name: String,
        /// Model repository or file hash.
        model: String,
        /// Least stake per node.
        min_stake: Balance,
        /// Most stake per node.
        max_stake: Balance,
        /// Up to `max_initial_validators` peer ids whose nodes start as
        /// Validator class.
        initial_validators: Vec<PeerId>,
    },
    /// Activate the signer's subnet once it has enough activated nodes.
    ActivateSubnet {
        /// The subnet.
        subnet: SubnetId,
    },
    /// Register a node owned by the signer, bonding `stake` from its free
    /// balance.
    RegisterSubnetNode {
        /// The subnet.
        subnet: SubnetId,
        /// Account the node signs consensus calls with.
        hotkey: AccountId,
        /// The node's libp2p peer id.
        peer_id: PeerId,
        /// Optional peer id of the node's client role.
        client_peer_id: Option<PeerId>,
        /// Stake to bond.
        stake: Balance,
    },
    /// Activate a registered node (by its owner or hotkey).
    ActivateSubnetNode {
        /// The subnet.
        subnet: SubnetId,
        /// The node.
        node: NodeId,
    },
    /// Bond more of the owner's free balance to a node.
    AddStake {
        /// The subnet.
        subnet: SubnetId,
        /// The node.
        node: NodeId,
        /// Base units.
        amount: Balance,
    },
    /// Move stake of a node into unbonding.
    RemoveStake {
        /// The subnet.
        subnet: SubnetId,
        /// The node.
        node: NodeId,
        /// Base units.
        amount: Balance,
    },
    /// Remove a node; all its stake goes into unbonding.
    RemoveSubnetNode {
        /// The subnet.
        subnet: SubnetId,
        /// The node.
        node: NodeId,
    },
    /// Move all matured unbonding entries of the signer to its free balance.
    ClaimUnbonded,
    /// The elected validator's scores for the epoch (signed by its hotkey).
    ProposeAttestation {
        /// The subnet.
        subnet: SubnetId,
        /// The current epoch.
        epoch: Epoch,
        /// `(node id, score)` sorted by node id, no duplicates.
        scores: Vec<(NodeId, u128)>,
    },
    /// Agreement of a snapshot validator with the epoch's proposal (signed by
    /// its hotkey).
    Attest {
        /// The subnet.
        subnet: SubnetId,
        /// The current epoch.
        epoch: Epoch,
    },
}

impl Call {
    /// The call's name, as in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Transfer { .. } => "transfer",
            Call::RegisterSubnet { .. } => "register_subnet",
            Call::ActivateSubnet { .. } => "activate_subnet",
            Call::RegisterSubnetNode { .. } => "register_subnet_node",
            Call::ActivateSubnetNode { .. } => "activate_subnet_node",
            Call::AddStake { .. } => "add_stake",
            Call::RemoveStake { .. } => "remove_stake",
            Call::RemoveSubnetNode { .. } => "remove_subnet_node",
            Call::ClaimUnbonded => "claim_unbonded",
            Call::ProposeAttestation { .. } => "propose_attestation",
            Call::Attest { .. } => "attest",
        }
    }

    /// Whether the fee is refunded when the call succeeds (SPEC §3.1:
    /// "propose and attest are free when valid").
    pub fn is_free_when_valid(&self) -> bool {
        matches!(self, Call::ProposeAttestation { .. } | Call::Attest { .. })
    }

    /// The checks that need only the call and the parameters: sizes,
    /// shapes, orderings. A transaction pool runs them at submission; the
    /// runtime runs them again in the block.
    pub fn check_stateless(&self, params: &Params) -> Result<()> {
        match self {
            Call::Transfer { amount, .. }
            | Call::AddStake { amount, .. }
            | Call::RemoveStake { amount, .. } => {
                if *amount == 0 {
                    return Err(Error::ZeroAmount);
                }
            }
            Call::RegisterSubnet {
                name,
                model,
                min_stake,
                max_stake,
                initial_validators,
            } => {
                check_text(name, params.max_name_length)
                    .map_err(|reason| Error::InvalidSubnetName { reason })?;
                check_text(model, params.max_model_length)
                    .map_err(|reason| Error::InvalidModel { reason })?;
                if *min_stake < params.min_stake
                    || min_stake > max_stake
                    || *max_stake > params.max_stake
                {
                    return Err(Error::InvalidStakeBounds {
                        min: *min_stake,
                        max: *max_stake,
                        network_min: params.min_stake,
                        network_max: params.max_stake,
                    });
                }
                if initial_validators.len() > params.max_initial_validators as usize {
                    return Err(Error::TooManyInitialValidators {
                        count: u32::try_from(initial_validators.len()).unwrap_or(u32::MAX),
                        max: params.max_initial_validators,
                    });
                }
                for (i, peer) in initial_validators.iter().enumerate() {
                    if initial_validators[..i].contains(peer) {
                        return Err(Error::DuplicateInitialValidator {
                            peer_id: peer.clone(),
                        });
                    }
                }
            }
            Call::ProposeAttestation { scores, .. } => {
                if scores.len() > params.max_nodes_per_subnet as usize {
                    return Err(Error::TooManyScores {
                        count: u32::try_from(scores.len()).unwrap_or(u32::MAX),
                        max: params.max_nodes_per_subnet,
                    });
                }
                let mut sum: u128 = 0;
                for (i, (node, score)) in scores.iter().enumerate() {
                    if i > 0 && scores[i - 1].0 >= *node {
                        return Err(Error::ScoresNotSorted { index: i as u32 });
                    }
                    sum = sum.checked_add(*score).ok_or(Error::ScoreSumOverflow)?;
                }
            }
            Call::ActivateSubnet { .. }
            | Call::RegisterSubnetNode { .. }
            | Call::ActivateSubnetNode { .. }
            | Call::RemoveSubnetNode { .. }
            | Call::ClaimUnbonded
            | Call::Attest { .. } => {}
        }
        Ok(())
    }
}

/// A name or model reference: 1..=max bytes, no control characters.
fn check_text(text: &str, max: u32) -> std::result::Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.len() > max as usize {
        return Err(format!("{} bytes, at most {max} allowed", text.len()));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".to_string());
    }
    Ok(())
}

impl Encode for Call {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Call::Transfer { to, amount } => (0u8, to, amount).encode_to(out),
            Call::RegisterSubnet {
                name,
                model,
                min_stake,
                max_stake,
                initial_validators,
            } => {
                (1u8, name, model).encode_to(out);
                (min_stake, max_stake, initial_validators).encode_to(out);
            }
            Call::ActivateSubnet { subnet } => (2u8, subnet).encode_to(out),
            Call::RegisterSubnetNode {
                subnet,
                hotkey,
                peer_id,
                client_peer_id,
                stake,
            } => {
                (3u8, subnet, hotkey).encode_to(out);
                (peer_id, client_peer_id, stake).encode_to(out);
            }
            Call::ActivateSubnetNode { subnet, node } => (4u8, subnet, node).encode_to(out),
            Call::AddStake {
                subnet,
                node,
                amount,
            } => {
                (5u8, subnet, node).encode_to(out);
                amount.encode_to(out);
            }
            Call::RemoveStake {
                subnet,
                node,
                amount,
            } => {
                (6u8, subnet, node).encode_to(out);
                amount.encode_to(out);
            }
            Call::RemoveSubnetNode { subnet, node } => (7u8, subnet, node).encode_to(out),
            Call::ClaimUnbonded => 8u8.encode_to(out),
            Call::ProposeAttestation {
                subnet,
                epoch,
                scores,
            } => {
                (9u8, subnet, epoch).encode_to(out);
                scores.encode_to(out);
            }
            Call::Attest { subnet, epoch } => (10u8, subnet, epoch).encode_to(out),
        }
    }
}
