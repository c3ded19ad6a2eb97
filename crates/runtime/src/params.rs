//! Chain parameters (SPEC §3.1): one struct, set in the genesis file, read
//! everywhere else. No other module hard-codes any of these numbers.

use hypertensor_primitives::units::serde_tensor;
use hypertensor_primitives::{Balance, Fixed, TENSOR};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Number of halvings after which the block subsidy is zero (SPEC §3.5).
pub const MAX_HALVINGS: u64 = 64;

/// Every tunable number of the chain. `Params::default()` holds the SPEC
/// defaults; [`Params::devnet`] the devnet overrides.
///
/// In JSON, balances are TENSOR decimal strings (`"100"`, `"0.001"`) and
/// fractions decimal strings (`"0.875"`); integers of base units are
/// accepted for balances too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Target time between blocks, for block producers and clients (the
    /// runtime itself never reads a clock).
    pub block_time_ms: u64,
    /// Blocks per epoch (`L`): epoch `e` spans blocks `[e*L, (e+1)*L)`.
    pub epoch_length: u64,
    /// Cap on total issuance, genesis endowments included.
    #[serde(with = "serde_tensor")]
    pub target_max_supply: Balance,
    /// Blocks between subsidy halvings.
    pub halving_interval: u64,
    /// Share of each block subsidy and each fee paid to the block author; the
    /// rest goes to the rewards vault.
    pub block_author_share: Fixed,
    /// Most subnets that may exist at once.
    pub max_subnets: u32,
    /// Most nodes (in any class) per subnet.
    pub max_nodes_per_subnet: u32,
    /// EDA cap on one subnet's share of the vault.
    pub max_subnet_rewards_weight: Fixed,
    /// Fee for `register_subnet`, paid to the treasury.
    #[serde(with = "serde_tensor")]
    pub subnet_registration_fee: Balance,
    /// Network-wide lower bound of a subnet's minimum stake.
    #[serde(with = "serde_tensor")]
    pub min_stake: Balance,
    /// Network-wide upper bound of a subnet's maximum stake.
    #[serde(with = "serde_tensor")]
    pub max_stake: Balance,
    /// Epochs between unbonding and being able to claim.
    pub unbonding_epochs: u64,
    /// Epochs after `start_epoch` in which a registration may still be
    /// activated.
    pub activation_grace_epochs: u64,
    /// In-consensus epochs an Idle node waits before becoming Included.
    pub idle_epochs: u32,
    /// Consecutive in-consensus epochs with a positive score an Included node
    /// needs to become a Validator.
    pub included_epochs: u32,
    /// Below this attestation ratio the elected validator is slashed and
    /// nothing is paid.
    pub min_attestation_ratio: Fixed,
    /// At or above this ratio, snapshot nodes that did not attest are
    /// penalized.
    pub supermajority_ratio: Fixed,
    /// Share of a subnet's allocation paid to the elected validator (times
    /// the attestation ratio).
    pub validator_reward_share: Fixed,
    /// Weight of stake in node rewards; score weight is `1 - this`.
    pub stake_rewards_weight: Fixed,
    /// Slash of an elected validator whose proposal failed, as a fraction of
    /// its stake (scaled by how far the ratio fell short).
    pub slash_base: Fixed,
    /// Upper bound of one slash.
    #[serde(with = "serde_tensor")]
    pub max_slash: Balance,
    /// Penalties at which a node is removed.
    pub max_penalties: u32,
    /// Fee of every extrinsic; `propose_attestation` and `attest` are refunded
    /// when they succeed.
    #[serde(with = "serde_tensor")]
    pub tx_base_fee: Balance,
    /// Activated nodes a subnet needs before its owner can activate it.
    pub min_subnet_nodes: u32,
    /// Most peer ids a subnet may name at registration as initial validators.
    pub max_initial_validators: u32,
    /// Longest subnet name, in bytes.
    pub max_name_length: u32,
    /// Longest model reference (repository or file hash), in bytes.
    pub max_model_length: u32,
    /// Most extrinsics in one block.
    pub max_block_extrinsics: u32,
    /// How far ahead of the account nonce a transaction pool may accept
    /// (`validate_extrinsic` answers `FutureNonce` beyond this).
    pub max_future_nonces: u64,
    /// Epochs of settled consensus data kept for queries.
    pub consensus_history_epochs: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            block_time_ms: 6000,
            epoch_length: 100,
            target_max_supply: 28_000_000 * TENSOR,
            halving_interval: 5_256_000,
            block_author_share: Fixed::from_decimal(10, 2),
            max_subnets: 64,
            max_nodes_per_subnet: 256,
            max_subnet_rewards_weight: Fixed::from_decimal(50, 2),
            subnet_registration_fee: 100 * TENSOR,
            min_stake: 100 * TENSOR,
            max_stake: 10_000 * TENSOR,
            unbonding_epochs: 4,
            activation_grace_epochs: 2,
            idle_epochs: 2,
            included_epochs: 2,
            min_attestation_ratio: Fixed::from_decimal(66, 2),
            supermajority_ratio: Fixed::from_decimal(875, 3),
            validator_reward_share: Fixed::from_decimal(5, 2),
            stake_rewards_weight: Fixed::from_decimal(40, 2),
            slash_base: Fixed::from_decimal(3125, 5),
            max_slash: 10 * TENSOR,
            max_penalties: 3,
            tx_base_fee: TENSOR / 1000,
            min_subnet_nodes: 3,
            max_initial_validators: 3,
            max_name_length: 64,
            max_model_length: 256,
            max_block_extrinsics: 4096,
            max_future_nonces: 64,
            consensus_history_epochs: 8,
        }
    }
}

impl Params {
    /// The devnet preset: 1 s blocks and 20-block epochs, the rest default.
    pub fn devnet() -> Params {
        Params {
            block_time_ms: 1000,
            epoch_length: 20,
            ..Params::default()
        }
    }

    /// Subsidy of the first block, `(target_max_supply / 2) / halving_interval`
    /// (SPEC §3.1), derived so it can never disagree with its inputs.
    pub fn initial_block_subsidy(&self) -> Balance {
        (self.target_max_supply / 2) / u128::from(self.halving_interval.max(1))
    }

    /// Checks the parameters are usable: positive periods, fractions at most
    /// 1, consistent bounds.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(Error::InvalidParams {
                reason: reason.to_string(),
            })
        };
        if self.epoch_length == 0 {
            return bad("epoch_length must be positive");
        }
        if self.halving_interval == 0 {
            return bad("halving_interval must be positive");
        }
        let fractions = [
            ("block_author_share", self.block_author_share),
            ("max_subnet_rewards_weight", self.max_subnet_rewards_weight),
            ("min_attestation_ratio", self.min_attestation_ratio),
            ("supermajority_ratio", self.supermajority_ratio),
            ("validator_reward_share", self.validator_reward_share),
            ("stake_rewards_weight", self.stake_rewards_weight),
            ("slash_base", self.slash_base),
        ];
        for (name, value) in fractions {
            if value > Fixed::ONE {
                return bad(&format!("{name} must be at most 1"));
            }
        }
        if self.min_attestation_ratio == Fixed::ZERO {
            return bad("min_attestation_ratio must be positive");
        }
        if self.min_stake == 0 || self.min_stake > self.max_stake {
            return bad("min_stake must be positive and at most max_stake");
        }
        if self.max_subnets == 0 || self.max_nodes_per_subnet == 0 {
            return bad("max_subnets and max_nodes_per_subnet must be positive");
        }
        if self.max_penalties == 0 {
            return bad("max_penalties must be positive");
        }
        if self.max_initial_validators > self.max_nodes_per_subnet {
            return bad("max_initial_validators cannot exceed max_nodes_per_subnet");
        }
        if self.max_block_extrinsics == 0 {
            return bad("max_block_extrinsics must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec_table() {
        let p = Params::default();
        assert_eq!(p.initial_block_subsidy(), 2_663_622_526_636_225_266);
        assert_eq!(p.slash_base.to_string(), "0.03125");
        assert_eq!(p.min_attestation_ratio.to_string(), "0.66");
        assert_eq!(p.supermajority_ratio.to_string(), "0.875");
        assert_eq!(p.tx_base_fee, TENSOR / 1000);
        p.validate().unwrap();
        let d = Params::devnet();
        assert_eq!((d.block_time_ms, d.epoch_length), (1000, 20));
        d.validate().unwrap();
    }

    #[test]
    fn json_is_readable_and_round_trips() {
        let json = serde_json::to_value(Params::default()).unwrap();
        assert_eq!(json["subnet_registration_fee"], "100");
        assert_eq!(json["tx_base_fee"], "0.001");
        assert_eq!(json["stake_rewards_weight"], "0.4");
        let back: Params = serde_json::from_value(json).unwrap();
        assert_eq!(back, Params::default());
        // Partial files fill in defaults; unknown keys are refused.
        let p: Params = serde_json::from_str(r#"{"epoch_length": 5}"#).unwrap();
        assert_eq!(p.epoch_length, 5);
        assert!(serde_json::from_str::<Params>(r#"{"epoch_lenght": 5}"#).is_err());
    }

    #[test]
    fn validate_names_the_bad_parameter() {
        let p = Params {
            epoch_length: 0,
            ..Params::default()
        };
        assert!(
            matches!(p.validate(), Err(Error::InvalidParams { reason }) if reason.contains("epoch_length"))
        );
        let p = Params {
            stake_rewards_weight: Fixed::from_decimal(2, 0),
            ..Params::default()
        };
        assert!(
            matches!(p.validate(), Err(Error::InvalidParams { reason }) if reason.contains("stake_rewards_weight"))
        );
        let p = Params {
            min_stake: 2,
            max_stake: 1,
            ..Params::default()
        };
        assert!(p.validate().is_err());
    }
}
