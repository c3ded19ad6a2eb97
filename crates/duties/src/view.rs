//! From what a node reads (the chain's node list, the DHT's records) to
//! the inputs of the pure scoring functions, in a fixed order, so two
//! nodes with the same view compute the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use hypertensor_consensus::NodeId;
use hypertensor_consensus::evidence::verify_evidence_record;
use hypertensor_consensus::records::{HosterReveal, ValidatorReveal, decode_commit};
use hypertensor_consensus::scores::{
    HosterInput, ScoreParams, ValidatorInput, hoster_scores_with_evidence, proposal,
    validator_scores,
};
use hypertensor_primitives::{H256, PeerId};
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
    /// `evidence/<epoch>`.
    pub evidence: Entries,
    /// The chain's genesis hash (the servers' receipts are signed in its
    /// domain).
    pub genesis: H256,
    /// The model's hidden size (the width of the outputs in evidence).
    pub hidden_size: usize,
}

/// The scored nodes that verified evidence in `view` convicts of serving
/// wrong outputs (see `hypertensor_consensus::evidence`). An entry with a
/// piece that does not decode or verify convicts no one; with no hidden
/// size known,
/// nothing is judged.
pub fn convicted(view: &EpochView) -> BTreeSet<NodeId> {
    if view.hidden_size == 0 {
        return BTreeSet::new();
    }
    view.evidence
        .values()
        .filter_map(|bytes| verify_evidence_record(bytes, &view.genesis, view.hidden_size).ok())
        .flatten()
        .filter_map(|accused| {
            view.nodes
                .iter()
                .find(|n| is_scored(n) && n.peer_id == accused)
                .map(|n| n.id)
        })
        .collect()
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
    let hosters = hoster_scores_with_evidence(
        params,
        epoch,
        n_blocks,
        &hoster_inputs(&view.nodes, &view.hoster_commits, &view.hoster_reveals),
        &convicted(view),
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

#[cfg(test)]
mod tests {
    use super::*;
    use hypertensor_consensus::records::Sketch;
    use hypertensor_consensus::scores::encode_proposal;
    use hypertensor_primitives::Keypair;
    use hypertensor_primitives::codec::Encode;

    fn node(id: NodeId, class: NodeClass) -> (SubnetNode, Keypair) {
        let key = Keypair::dev(&format!("view-{id}"));
        let node = SubnetNode {
            id,
            owner: key.account_id(),
            hotkey: key.account_id(),
            peer_id: key.peer_id(),
            client_peer_id: None,
            stake: 100,
            class,
            class_start_epoch: 0,
            start_epoch: 0,
            penalties: 0,
            promotion_progress: 0,
        };
        (node, key)
    }

    /// A view of epoch 5: a validator with no hoster records, three
    /// hosters (one noisy), one whose reveal is missing, and an Idle node
    /// that is not scored.
    fn view() -> EpochView {
        let mut view = EpochView::default();
        for (id, class, noise) in [
            (1, NodeClass::Validator, None),
            (2, NodeClass::Included, Some(0.0)),
            (3, NodeClass::Included, Some(0.3)),
            (4, NodeClass::Included, Some(0.0)),
            (5, NodeClass::Idle, Some(0.0)),
            (6, NodeClass::Included, Some(0.0)),
        ] {
            let (n, _) = node(id, class);
            if let Some(noise) = noise {
                let sketch: Sketch = std::array::from_fn(|i| 1.0 + i as f32 * 0.01 + noise);
                let reveal = HosterReveal::new([id as u8; 16], 0, vec![sketch; 2]).unwrap();
                view.hoster_commits
                    .insert(n.peer_id.clone(), reveal.commit(5, &n.peer_id).0.to_vec());
                if id != 6 {
                    view.hoster_reveals
                        .insert(n.peer_id.clone(), reveal.encode());
                }
            }
            view.nodes.push(n);
        }
        view
    }

    #[test]
    fn node_order_does_not_change_the_proposal_bytes() {
        let params = ScoreParams::default();
        let a = score_epoch(&params, 5, 2, &view()).unwrap();
        let mut reversed = view();
        reversed.nodes.reverse();
        let b = score_epoch(&params, 5, 2, &reversed).unwrap();
        assert_eq!(encode_proposal(&a.proposal), encode_proposal(&b.proposal));
        let ids: Vec<NodeId> = a.proposal.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 6], "scored nodes only, Idle left out");
        let score = |id| a.hosters[&id];
        assert_eq!(score(1), 0.0, "no records");
        assert_eq!(score(6), 0.0, "commit without reveal");
        assert_eq!(score(2), score(4));
        assert!(score(2) > score(3) && score(3) > 0.0, "{:?}", a.hosters);
        assert!((a.hosters.values().sum::<f64>() - 0.4).abs() < 1e-12);
    }

    #[test]
    fn a_record_that_does_not_decode_counts_as_missing() {
        let mut v = view();
        let peer = v.nodes[1].peer_id.clone();
        v.hoster_reveals.insert(peer, vec![1, 2, 3]);
        let s = score_epoch(&ScoreParams::default(), 5, 2, &v).unwrap();
        assert_eq!(s.hosters[&2], 0.0);
    }
}
