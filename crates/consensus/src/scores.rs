//! Hoster and validator scores, the proposal vector and the attestation
//! check (SPEC §6), in f64 and a fixed order so every scorer gets the same
//! bits from the same records.
//!
//! Inputs are taken per subnet node and sorted by node id before anything is
//! computed, so the order in which a node read the DHT does not matter.

use std::collections::{BTreeMap, BTreeSet};

use hypertensor_primitives::codec::Encode;
use hypertensor_primitives::{H256, PeerId};

use crate::NodeId;
use crate::records::{HosterReveal, ValidatorReveal};
use crate::stats::{distance, filtered_mean, norm};
use crate::{Error, Result};

/// 1.0 as a chain fraction (SPEC §2).
pub const FIXED_ONE: u128 = 1_000_000_000_000_000_000;
/// Attestation tolerance: scores agree iff `|a - b| <= max(a, b) / 10^9`.
pub const ATTESTATION_TOLERANCE_INV: u128 = 1_000_000_000;

/// Parameters of the scores (*param*); [`Default`] gives SPEC §6's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreParams {
    /// Fence multiplier of the interquartile filter (1.5).
    pub iqr_k: f64,
    /// Sum of all hoster scores (0.4).
    pub hoster_share: f64,
    /// Sum of all validator scores (0.6).
    pub validator_share: f64,
    /// Relative deviation at which a validator's quality reaches 0 (0.10).
    pub validator_tolerance: f64,
}

impl Default for ScoreParams {
    fn default() -> Self {
        ScoreParams {
            iqr_k: 1.5,
            hoster_share: 0.4,
            validator_share: 0.6,
            validator_tolerance: 0.10,
        }
    }
}

/// What a scorer found in the DHT for one hoster of an epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct HosterInput {
    /// The hoster's subnet node id.
    pub node: NodeId,
    /// The peer id that signed its records.
    pub writer: PeerId,
    /// Its `hoster-commit/<e>`, if one was found.
    pub commit: Option<H256>,
    /// Its `hoster-reveal/<e>`, if one was found.
    pub reveal: Option<HosterReveal>,
}

/// What a scorer found in the DHT for one validator about epoch `e`.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatorInput {
    /// The validator's subnet node id.
    pub node: NodeId,
    /// The peer id that signed its records.
    pub writer: PeerId,
    /// Its `validator-commit/<e>`, if one was found.
    pub commit: Option<H256>,
    /// Its `validator-reveal/<e>` (written in `e + 1`), if one was found.
    pub reveal: Option<ValidatorReveal>,
}

fn sorted_unique<T>(items: &[T], node: impl Fn(&T) -> NodeId) -> Result<Vec<&T>> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by_key(|i| node(i));
    for pair in sorted.windows(2) {
        if node(pair[0]) == node(pair[1]) {
            return Err(Error::DuplicateNode(node(pair[0])));
        }
    }
    Ok(sorted)
}

/// A hoster reveal that counts: commit and reveal present, the reveal
/// matching the commit under the hoster's identity, the span inside the
/// model with one finite sketch per block.
fn valid_hoster_reveal(input: &HosterInput, epoch: u64, n_blocks: u32) -> Option<&HosterReveal> {
    let (commit, reveal) = (input.commit.as_ref()?, input.reveal.as_ref()?);
    reveal.verify(commit, epoch, &input.writer).ok()?;
    let body = &reveal.body;
    let shape_ok = body.span_start < body.span_end
        && body.span_end <= n_blocks
        && body.sketches.len() == body.span_len() as usize
        && body.sketches.iter().flatten().all(|v| v.is_finite());
    shape_ok.then_some(reveal)
}

/// Hoster scores `s_h = q_h · span_len_h / n_blocks` before normalisation,
/// for every hoster of `inputs` (0 for a missing or mismatching commit or
/// reveal). For block `b`, `m_b` is the IQR-filtered mean of the valid
/// sketches, `d_hb = ‖z_hb − m_b‖ / (‖m_b‖ + 1e-9)`, and
/// `q_h = 1 / (1 + mean_b d_hb)` over the blocks of `h`'s span.
pub fn hoster_raw_scores(
    params: &ScoreParams,
    epoch: u64,
    n_blocks: u32,
    inputs: &[HosterInput],
) -> Result<BTreeMap<NodeId, f64>> {
    let hosters = sorted_unique(inputs, |h| h.node)?;
    let valid: Vec<(NodeId, &HosterReveal)> = hosters
        .iter()
        .filter_map(|h| valid_hoster_reveal(h, epoch, n_blocks).map(|r| (h.node, r)))
        .collect();
    // Sum of d_hb and block count per valid hoster, in block order.
    let mut errors: BTreeMap<NodeId, (f64, u32)> = BTreeMap::new();
    for b in 0..n_blocks {
        let serving: Vec<(NodeId, Vec<f64>)> = valid
            .iter()
            .filter(|(_, r)| r.body.span_start <= b && b < r.body.span_end)
            .map(|(node, r)| {
                let sketch = &r.body.sketches[(b - r.body.span_start) as usize];
                (*node, sketch.iter().map(|v| f64::from(*v)).collect())
            })
            .collect();
        let rows: Vec<&[f64]> = serving.iter().map(|(_, z)| z.as_slice()).collect();
        let Some(reference) = filtered_mean(&rows, params.iqr_k) else {
            continue;
        };
        let scale = norm(&reference) + 1e-9;
        for (node, z) in &serving {
            let entry = errors.entry(*node).or_insert((0.0, 0));
            entry.0 += distance(z, &reference) / scale;
            entry.1 += 1;
        }
    }
    Ok(hosters
        .iter()
        .map(|h| {
            let score = match (
                errors.get(&h.node),
                valid.iter().find(|(n, _)| *n == h.node),
            ) {
                (Some((sum, count)), Some((_, reveal))) => {
                    let q = 1.0 / (1.0 + sum / f64::from(*count));
                    q * f64::from(reveal.body.span_len()) / f64::from(n_blocks)
                }
                _ => 0.0,
            };
            (h.node, score)
        })
        .collect())
}

/// Scales `scores` to sum to `share` (summed in node order); all-zero stays
/// zero.
pub fn normalize(scores: &BTreeMap<NodeId, f64>, share: f64) -> BTreeMap<NodeId, f64> {
    let total: f64 = scores.values().sum();
    scores
        .iter()
        .map(|(node, s)| (*node, if total > 0.0 { s * share / total } else { 0.0 }))
        .collect()
}

/// Hoster scores of an epoch, normalised to sum to `hoster_share` (0.4).
pub fn hoster_scores(
    params: &ScoreParams,
    epoch: u64,
    n_blocks: u32,
    inputs: &[HosterInput],
) -> Result<BTreeMap<NodeId, f64>> {
    hoster_scores_with_evidence(params, epoch, n_blocks, inputs, &BTreeSet::new())
}

/// Hoster scores of an epoch where the `convicted` hosters (verified
/// evidence of wrong outputs against them, [`crate::evidence`]) score 0
/// before normalisation: their share goes to the others. Their sketches
/// still count in each block's reference (they answered the challenge; what
/// they served users is what was wrong).
pub fn hoster_scores_with_evidence(
    params: &ScoreParams,
    epoch: u64,
    n_blocks: u32,
    inputs: &[HosterInput],
    convicted: &BTreeSet<NodeId>,
) -> Result<BTreeMap<NodeId, f64>> {
    let mut raw = hoster_raw_scores(params, epoch, n_blocks, inputs)?;
    for (node, score) in raw.iter_mut() {
        if convicted.contains(node) {
            *score = 0.0;
        }
    }
    Ok(normalize(&raw, params.hoster_share))
}

fn valid_validator_reveal(input: &ValidatorInput, epoch: u64) -> Option<&ValidatorReveal> {
    let (commit, reveal) = (input.commit.as_ref()?, input.reveal.as_ref()?);
    reveal.verify(commit, epoch, &input.writer).ok()?;
    let sorted = reveal.scores.windows(2).all(|w| w[0].0 < w[1].0);
    let values_ok = reveal
        .scores
        .iter()
        .all(|(_, s)| s.is_finite() && *s >= 0.0);
    (sorted && values_ok).then_some(reveal)
}

/// Validator qualities for epoch `e` before normalisation: for each hoster
/// the reference `ref_h` is the IQR-filtered mean of the valid reveals'
/// scores (a hoster missing from a reveal counts as 0 there);
/// `dev_v = Σ_h |s_vh − ref_h| / Σ_h ref_h`; quality
/// `max(0, 1 − dev_v / tolerance)`; a missing or mismatching reveal scores 0.
/// When `Σ_h ref_h = 0`, `dev_v` is 0 if the validator also revealed all
/// zeros and infinite otherwise.
pub fn validator_raw_scores(
    params: &ScoreParams,
    epoch: u64,
    inputs: &[ValidatorInput],
) -> Result<BTreeMap<NodeId, f64>> {
    let validators = sorted_unique(inputs, |v| v.node)?;
    let valid: Vec<(NodeId, BTreeMap<NodeId, f64>)> = validators
        .iter()
        .filter_map(|v| {
            valid_validator_reveal(v, epoch).map(|r| (v.node, r.scores.iter().copied().collect()))
        })
        .collect();
    let hosters: BTreeSet<NodeId> = valid.iter().flat_map(|(_, s)| s.keys().copied()).collect();
    let reference: BTreeMap<NodeId, f64> = hosters
        .iter()
        .map(|h| {
            let column: Vec<[f64; 1]> = valid
                .iter()
                .map(|(_, s)| [s.get(h).copied().unwrap_or(0.0)])
                .collect();
            let rows: Vec<&[f64]> = column.iter().map(|r| &r[..]).collect();
            (*h, filtered_mean(&rows, params.iqr_k).map_or(0.0, |m| m[0]))
        })
        .collect();
    let ref_total: f64 = reference.values().sum();
    Ok(validators
        .iter()
        .map(|v| {
            let Some((_, scores)) = valid.iter().find(|(n, _)| *n == v.node) else {
                return (v.node, 0.0);
            };
            let abs_dev: f64 = reference
                .iter()
                .map(|(h, r)| (scores.get(h).copied().unwrap_or(0.0) - r).abs())
                .sum();
            let dev = if ref_total > 0.0 {
                abs_dev / ref_total
            } else if abs_dev == 0.0 {
                0.0
            } else {
                f64::INFINITY
            };
            (v.node, (1.0 - dev / params.validator_tolerance).max(0.0))
        })
        .collect())
}

/// Validator scores of an epoch, normalised to sum to `validator_share`
/// (0.6).
pub fn validator_scores(
    params: &ScoreParams,
    epoch: u64,
    inputs: &[ValidatorInput],
) -> Result<BTreeMap<NodeId, f64>> {
    Ok(normalize(
        &validator_raw_scores(params, epoch, inputs)?,
        params.validator_share,
    ))
}

/// `floor(score · 10^18)` as a chain fraction; refuses negative or
/// non-finite scores (a value above `u128::MAX / 10^18` saturates).
pub fn to_fixed(score: f64) -> Result<u128> {
    if !(score.is_finite() && score >= 0.0) {
        return Err(Error::Invalid {
            field: "score",
            reason: format!("{score} is not a finite non-negative number"),
        });
    }
    Ok((score * FIXED_ONE as f64).floor() as u128)
}

/// The proposal of epoch `e`: the hoster scores of `e` and the validator
/// scores of `e − 1`, as `(node id, floor(score · 10^18))` sorted by node id.
/// Every scored node appears, zeros included, so attesters compare the same
/// node set; a node in both maps (it cannot normally be both) gets the sum.
pub fn proposal(
    hoster_scores: &BTreeMap<NodeId, f64>,
    validator_scores_prev: &BTreeMap<NodeId, f64>,
) -> Result<Vec<(NodeId, u128)>> {
    let mut combined: BTreeMap<NodeId, f64> = hoster_scores.clone();
    for (node, s) in validator_scores_prev {
        *combined.entry(*node).or_insert(0.0) += s;
    }
    combined
        .into_iter()
        .map(|(node, s)| Ok((node, to_fixed(s)?)))
        .collect()
}

/// The canonical bytes of a proposal (`u32` count, then `(u32, u128)` pairs).
pub fn encode_proposal(proposal: &[(NodeId, u128)]) -> Vec<u8> {
    proposal.to_vec().encode()
}

/// Whether a node attests `proposed` given the vector `mine` it computed
/// itself: both sorted without duplicates, the same node set, and every
/// score within 10^-9 relative (`|a − b| · 10^9 <= max(a, b)`). The error
/// names the first disagreement.
pub fn check_attestation(mine: &[(NodeId, u128)], proposed: &[(NodeId, u128)]) -> Result<()> {
    let disagree = |msg: String| Err(Error::Disagreement(msg));
    if !proposed.windows(2).all(|w| w[0].0 < w[1].0) {
        return disagree("proposed node ids are not strictly increasing".into());
    }
    if mine.len() != proposed.len() {
        return disagree(format!(
            "{} nodes proposed, {} computed",
            proposed.len(),
            mine.len()
        ));
    }
    for ((my_node, my_score), (node, score)) in mine.iter().zip(proposed) {
        if my_node != node {
            return disagree(format!(
                "node {node} proposed where node {my_node} was computed"
            ));
        }
        let diff = my_score.abs_diff(*score);
        if diff > (*my_score).max(*score) / ATTESTATION_TOLERANCE_INV {
            return disagree(format!(
                "node {node}: proposed {score}, computed {my_score}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
