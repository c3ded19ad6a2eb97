//! What the duty state machine needs to know about its node and subnet.

use hypertensor_consensus::phase::PhaseParams;
use hypertensor_consensus::scores::ScoreParams;
use hypertensor_primitives::H256;
use hypertensor_runtime::SubnetId;

/// Blocks to wait for a submitted proposal or attestation to show on chain
/// before submitting it again.
pub const RESUBMIT_AFTER_BLOCKS: u64 = 2;

/// The settings of one node's duties.
#[derive(Clone, Debug, PartialEq)]
pub struct DutyConfig {
    /// The subnet.
    pub subnet: SubnetId,
    /// Blocks per epoch on chain.
    pub epoch_length: u64,
    /// Transformer blocks of the subnet's model.
    pub n_blocks: u32,
    /// Tokens `T` of the challenges this node writes.
    pub challenge_tokens: u32,
    /// Whether this node serves a span (and so sketches and commits).
    pub hosts: bool,
    /// The windows of SPEC §6.
    pub phases: PhaseParams,
    /// The score parameters.
    pub scores: ScoreParams,
    /// Blocks of grace the DHT's phase validator allows late writers: reads
    /// that feed a score wait this long past their window's start (plus
    /// one block), so they see every accepted write.
    pub grace_blocks: u64,
    /// See [`RESUBMIT_AFTER_BLOCKS`].
    pub resubmit_after_blocks: u64,
    /// The chain's genesis hash: evidence's receipts are signed in its
    /// domain.
    pub genesis: H256,
    /// The model's hidden size, to judge evidence (0: evidence is not
    /// judged).
    pub hidden_size: usize,
    /// The model's name (in the DHT's keys), to judge evidence.
    pub model: String,
}

impl DutyConfig {
    /// SPEC §6's defaults for a subnet of `epoch_length`-block epochs whose
    /// model has `n_blocks` blocks; `hosts` says whether the node serves a
    /// span.
    pub fn new(subnet: SubnetId, epoch_length: u64, n_blocks: u32, hosts: bool) -> Self {
        DutyConfig {
            subnet,
            epoch_length: epoch_length.max(1),
            n_blocks,
            challenge_tokens: hypertensor_consensus::records::DEFAULT_CHALLENGE_TOKENS,
            hosts,
            phases: PhaseParams::default(),
            scores: ScoreParams::default(),
            grace_blocks: 1,
            resubmit_after_blocks: RESUBMIT_AFTER_BLOCKS,
            genesis: H256::default(),
            hidden_size: 0,
            model: String::new(),
        }
    }
}
