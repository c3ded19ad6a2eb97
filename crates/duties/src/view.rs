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
    /// The model's name (what the receipts in evidence must be for).
    pub model: String,
}

/// The scored nodes that verified evidence in `view` convicts of serving
/// wrong outputs (see `hypertensor_consensus::evidence`). A piece counts
/// only when the accused and each witness are scored nodes of the subnet,
/// all distinct: keys anyone can make witness nothing. An entry with a
/// piece that does not decode or verify convicts no one; with no hidden
/// size known, nothing is judged.
pub fn convicted(view: &EpochView) -> BTreeSet<NodeId> {
    if view.hidden_size == 0 {
        return BTreeSet::new();
    }
    let scored = |peer: &PeerId| {
        view.nodes
            .iter()
            .find(|n| is_scored(n) && &n.peer_id == peer)
            .map(|n| n.id)
    };
    view.evidence
        .values()
        .filter_map(|bytes| {
            verify_evidence_record(bytes, &view.genesis, &view.model, view.hidden_size).ok()
        })
        .flatten()
        .filter_map(|piece| {
            let ids: Vec<NodeId> = piece.servers().map(scored).collect::<Option<_>>()?;
            let distinct: BTreeSet<&NodeId> = ids.iter().collect();
            (distinct.len() == ids.len()).then_some(ids[0])
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

    /// `server`'s signed answer `row` (one row of width 2) to one step.
    fn receipt(server: &Keypair, row: [f32; 2]) -> hypertensor_consensus::evidence::Receipt {
        use hypertensor_consensus::evidence::{
            Encoding, Receipt, ReceiptFields, Transcript, output_digest,
        };
        let client = Keypair::dev("view-client").peer_id();
        let mut transcript = Transcript::new("m", 0, 2, Encoding::F32);
        transcript.step(0, 1, &[0u8; 8]);
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (rows, digest) = output_digest(&bytes, 8);
        let fields = ReceiptFields {
            client: &client,
            session: &[1; 16],
            model: "m",
            start: 0,
            end: 2,
            encoding: Encoding::F32,
            position: 0,
            n_tokens: 1,
            inputs: &transcript.digest(),
            output: &digest,
        };
        Receipt {
            server: server.peer_id(),
            signature: fields.sign(server, &H256([5; 32])),
            client: client.clone(),
            session: [1; 16],
            model: "m".into(),
            start: 0,
            end: 2,
            encoding: Encoding::F32,
            position: 0,
            n_tokens: 1,
            inputs: transcript.digest(),
            rows,
            row: 0,
            row_bytes: bytes,
        }
    }

    #[test]
    fn evidence_convicts_only_when_accused_and_witnesses_are_scored_nodes() {
        use hypertensor_consensus::evidence::{Evidence, encode_evidence_record};
        let nodes: Vec<(SubnetNode, Keypair)> = [
            (1, NodeClass::Included),
            (2, NodeClass::Included),
            (3, NodeClass::Validator),
            (4, NodeClass::Idle),
        ]
        .into_iter()
        .map(|(id, class)| node(id, class))
        .collect();
        let key = |id: usize| &nodes[id - 1].1;
        let piece = |accused: &Keypair, witnesses: [&Keypair; 2]| Evidence {
            accused: receipt(accused, [1.0, 9.0]),
            witnesses: witnesses.iter().map(|w| receipt(w, [1.0, 2.0])).collect(),
        };
        let convicted_by = |pieces: Vec<Evidence>| {
            let mut view = EpochView {
                nodes: nodes.iter().map(|(n, _)| n.clone()).collect(),
                genesis: H256([5; 32]),
                hidden_size: 2,
                model: "m".into(),
                ..EpochView::default()
            };
            view.evidence
                .insert(key(3).peer_id(), encode_evidence_record(&pieces));
            convicted(&view)
        };
        // Two scored witnesses: node 1 is convicted.
        assert_eq!(
            convicted_by(vec![piece(key(1), [key(2), key(3)])]),
            BTreeSet::from([1])
        );
        // Witnesses anyone can make (fresh keys) convict no one.
        let (a, b) = (Keypair::dev("fresh-a"), Keypair::dev("fresh-b"));
        assert!(convicted_by(vec![piece(key(1), [&a, &b])]).is_empty());
        // Nor does a witness that is not scored (Idle), or an accused that
        // is not a scored node.
        assert!(convicted_by(vec![piece(key(1), [key(2), key(4)])]).is_empty());
        assert!(convicted_by(vec![piece(key(4), [key(2), key(3)])]).is_empty());
        // Another model's receipts convict no one.
        let mut other = piece(key(1), [key(2), key(3)]);
        other.accused.model = "other".into();
        assert!(convicted_by(vec![other]).is_empty());
    }
}
