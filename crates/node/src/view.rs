//! From what a node reads (the chain's node list, the DHT's records) to
//! the inputs of the pure scoring functions, in a fixed order, so two
//! nodes with the same view compute the same bytes.

use std::collections::BTreeMap;

use hypertensor_consensus::NodeId;
use hypertensor_consensus::records::{HosterReveal, ValidatorReveal, decode_commit};
use hypertensor_consensus::scores::{
    HosterInput, ScoreParams, ValidatorInput, hoster_scores, proposal, validator_scores,
};
use hypertensor_primitives::PeerId;
use hypertensor_runtime::{NodeClass, SubnetNode};

/// Entries of one DHT key, by writer.
pub type Entries = BTreeMap<PeerId, Vec<u8>>;

/// Whether a node is scored and paid this epoch (SPEC §3.3).
pub fn is_scored(node: &SubnetNode) -> bool {
    matches!(node.class, NodeClass::Included | NodeClass::Validator)
}

/// One hoster input per scored node, its records looked up by its peer id
/// (a record that does not decode counts as missing).
pub fn hoster_inputs(
    nodes: &[SubnetNode],
    commits: &Entries,
    reveals: &Entries,
) -> Vec<HosterInput> {
    nodes
        .iter()
        .filter(|n| is_scored(n))
        .map(|n| HosterInput {
            node: n.id,
            writer: n.peer_id.clone(),
            commit: commits.get(&n.peer_id).and_then(|b| decode_commit(b).ok()),
            reveal: reveals
                .get(&n.peer_id)
                .and_then(|b| HosterReveal::decode(b).ok()),
        })
        .collect()
}

/// One validator input per node of `validators` that is still scored.
pub fn validator_inputs(
    nodes: &[SubnetNode],
    validators: &[NodeId],
    commits: &Entries,
    reveals: &Entries,
) -> Vec<ValidatorInput> {
    nodes
        .iter()
        .filter(|n| is_scored(n) && validators.contains(&n.id))
        .map(|n| ValidatorInput {
            node: n.id,
            writer: n.peer_id.clone(),
            commit: commits.get(&n.peer_id).and_then(|b| decode_commit(b).ok()),
            reveal: reveals
                .get(&n.peer_id)
                .and_then(|b| ValidatorReveal::decode(b).ok()),
        })
        .collect()
}

/// What a node reads to score epoch `epoch`.
#[derive(Clone, Debug, Default)]
pub struct EpochView {
    /// The subnet's nodes now.
    pub nodes: Vec<SubnetNode>,
    /// `hoster-commit/<epoch>`.
    pub hoster_commits: Entries,
    /// `hoster-reveal/<epoch>`.
    pub hoster_reveals: Entries,
    /// The validator snapshot of `epoch - 1` (empty if none).
    pub prev_validators: Vec<NodeId>,
    /// `validator-commit/<epoch - 1>`.
    pub validator_commits: Entries,
    /// `validator-reveal/<epoch - 1>`.
    pub validator_reveals: Entries,
}

/// The scores of one epoch as a node computes them.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochScores {
    /// Hoster scores of the epoch (sum 0.4, or all zero).
    pub hosters: BTreeMap<NodeId, f64>,
    /// Validator scores of the previous epoch (sum 0.6, or all zero).
    pub validators_prev: BTreeMap<NodeId, f64>,
    /// The proposal vector: both, as chain fractions, by node id.
    pub proposal: Vec<(NodeId, u128)>,
}

/// Scores epoch `epoch` from `view`.
pub fn score_epoch(
    params: &ScoreParams,
    epoch: u64,
    n_blocks: u32,
    view: &EpochView,
) -> hypertensor_consensus::Result<EpochScores> {
    let hosters = hoster_scores(
        params,
        epoch,
        n_blocks,
        &hoster_inputs(&view.nodes, &view.hoster_commits, &view.hoster_reveals),
    )?;
    let validators_prev = match epoch.checked_sub(1) {
        Some(prev) => validator_scores(
            params,
            prev,
            &validator_inputs(
                &view.nodes,
                &view.prev_validators,
                &view.validator_commits,
                &view.validator_reveals,
            ),
        )?,
        None => BTreeMap::new(),
    };
    let proposal = proposal(&hosters, &validators_prev)?;
    Ok(EpochScores {
        hosters,
        validators_prev,
        proposal,
    })
}
