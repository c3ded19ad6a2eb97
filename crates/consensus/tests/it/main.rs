//! One epoch of consensus from the challenge to the attestation, through the
//! public API and the records' bytes, with a toy model standing in for the
//! transformer blocks.

use std::collections::BTreeMap;

use hypertensor_consensus::NodeId;
use hypertensor_consensus::challenge::SketchMatrix;
use hypertensor_consensus::phase::{PhaseParams, Position, RecordKind, Writer};
use hypertensor_consensus::records::{Challenge, HosterReveal, ValidatorReveal, decode_commit};
use hypertensor_consensus::scores::{
    HosterInput, ScoreParams, ValidatorInput, check_attestation, encode_proposal, hoster_scores,
    proposal, validator_scores,
};
use hypertensor_primitives::codec::Encode;
use hypertensor_primitives::{Keypair, PeerId};

const HIDDEN: usize = 64;
const BLOCKS: u32 = 4;
const EPOCH: u64 = 12;
const L: u64 = 100;

fn peer(node: NodeId) -> PeerId {
    let mut secret = [0u8; 32];
    secret[..4].copy_from_slice(&node.to_le_bytes());
    Keypair::from_secret(secret).peer_id()
}

/// Toy block `b`: `y = x + 0.1 · tanh(W_b x)` per token, `W_b` fixed.
fn block(b: u32, x: &[f32]) -> Vec<f32> {
    let w = |i: usize, j: usize| (((i * 31 + j * 17 + b as usize * 7) % 13) as f32 - 6.0) / 20.0;
    x.chunks(HIDDEN)
        .flat_map(|row| {
            (0..HIDDEN).map(move |i| {
                let dot: f32 = row.iter().enumerate().map(|(j, v)| w(i, j) * v).sum();
                row[i] + 0.1 * dot.tanh()
            })
        })
        .collect()
}

/// A hoster's reveal bytes and commit bytes, `noise` scaled into its outputs
/// (a tiny `jitter` stands for different hardware).
fn hoster_records(
    node: NodeId,
    span: std::ops::Range<u32>,
    x: &[f32],
    m: &SketchMatrix,
    noise: f32,
) -> (Vec<u8>, Vec<u8>) {
    let sketches = span
        .clone()
        .map(|b| {
            let mut y = block(b, x);
            for (i, v) in y.iter_mut().enumerate() {
                let wobble =
                    ((i as f32 * 12.9898 + node as f32 * 78.233).sin() * 43758.547).fract();
                *v += *v * 1e-6 * wobble + noise * (wobble - 0.5);
            }
            m.sketch(&y).unwrap()
        })
        .collect();
    let reveal = HosterReveal::new([node as u8; 16], span.start, sketches).unwrap();
    let commit = reveal.commit(EPOCH, &peer(node));
    (reveal.encode(), commit.as_bytes().to_vec())
}

#[test]
fn one_epoch_from_challenge_to_attestation() {
    let phases = PhaseParams::default();
    // The elected validator writes the challenge at offset 3.
    let at = |offset: u64| Position::at(EPOCH * L + offset, L).unwrap();
    assert!(phases.may_write(
        RecordKind::Challenge,
        EPOCH,
        at(3),
        Writer::ElectedValidator
    ));
    let challenge = Challenge::decode(
        &Challenge {
            seed: [9; 32],
            tokens: 8,
        }
        .encode(),
    )
    .unwrap();
    let x = challenge.input(HIDDEN, 8.0).unwrap();
    let m = challenge.sketch_matrix(HIDDEN).unwrap();

    // Hosters 1-4 honest (two full spans, two halves), 5 noisy, 6 copies
    // 1's commit and then its reveal.
    assert!(phases.may_write(RecordKind::HosterCommit, EPOCH, at(20), Writer::Other));
    let mut records: BTreeMap<NodeId, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    records.insert(1, hoster_records(1, 0..BLOCKS, &x, &m, 0.0));
    records.insert(2, hoster_records(2, 0..2, &x, &m, 0.0));
    records.insert(3, hoster_records(3, 2..BLOCKS, &x, &m, 0.0));
    records.insert(4, hoster_records(4, 0..BLOCKS, &x, &m, 0.0));
    records.insert(5, hoster_records(5, 0..BLOCKS, &x, &m, 0.5));
    records.insert(7, hoster_records(7, 0..BLOCKS, &x, &m, 0.0));
    records.insert(6, records[&1].clone());

    // Every scorer decodes what it read from the DHT.
    let view: Vec<HosterInput> = records
        .iter()
        .map(|(node, (reveal, commit))| HosterInput {
            node: *node,
            writer: peer(*node),
            commit: Some(decode_commit(commit).unwrap()),
            reveal: Some(HosterReveal::decode(reveal).unwrap()),
        })
        .collect();
    let params = ScoreParams::default();
    let hs = hoster_scores(&params, EPOCH, BLOCKS, &view).unwrap();
    assert_eq!(hs[&6], 0.0, "copied commit: {hs:?}");
    // The noisy hoster scores below every honest one of the same span, and
    // its score per served block is the lowest of all.
    let span_len = |node: NodeId| if node == 2 || node == 3 { 2.0 } else { 4.0 };
    for honest in [1, 4, 7] {
        assert!(hs[&honest] > hs[&5], "{hs:?}");
    }
    for honest in [1, 2, 3, 4, 7] {
        assert!(
            hs[&honest] / span_len(honest) > hs[&5] / span_len(5),
            "{hs:?}"
        );
    }
    // Full-span honest hosters earn twice a half-span one.
    assert!((hs[&1] / hs[&2] - 2.0).abs() < 1e-3, "{hs:?}");
    assert!((hs.values().sum::<f64>() - 0.4).abs() < 1e-12);

    // Validators 21-24 reveal these scores (in epoch e+1); 24 reveals
    // something other than it committed.
    assert!(phases.may_write(
        RecordKind::ValidatorReveal,
        EPOCH,
        at(L + 55),
        Writer::Validator
    ));
    let validators: Vec<ValidatorInput> = [21, 22, 23, 24]
        .into_iter()
        .map(|node| {
            let reveal = ValidatorReveal::new([node as u8; 16], &hs).unwrap();
            let commit = reveal.commit(EPOCH, &peer(node));
            let mut reveal = ValidatorReveal::decode(&reveal.encode()).unwrap();
            if node == 24 {
                reveal.scores[0].1 *= 1.01;
            }
            ValidatorInput {
                node,
                writer: peer(node),
                commit: Some(commit),
                reveal: Some(reveal),
            }
        })
        .collect();
    let vs = validator_scores(&params, EPOCH, &validators).unwrap();
    assert_eq!(vs[&24], 0.0);
    assert!((vs[&21] - 0.2).abs() < 1e-12, "{vs:?}");

    // Two scorers reading in different orders propose the same bytes; the
    // attestation accepts it and refuses a tampered one.
    let mine = proposal(&hs, &vs).unwrap();
    let mut reversed_view = view.clone();
    reversed_view.reverse();
    let hs2 = hoster_scores(&params, EPOCH, BLOCKS, &reversed_view).unwrap();
    let theirs = proposal(&hs2, &vs).unwrap();
    assert_eq!(encode_proposal(&mine), encode_proposal(&theirs));
    check_attestation(&mine, &theirs).unwrap();
    let mut tampered = theirs.clone();
    tampered[0].1 += tampered[0].1 / 1000;
    assert!(check_attestation(&mine, &tampered).is_err());
}
