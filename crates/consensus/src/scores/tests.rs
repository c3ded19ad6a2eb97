use super::*;
use crate::records::{HosterRevealBody, SKETCH_LEN, Sketch};
use hypertensor_primitives::Keypair;
use proptest::prelude::*;

const EPOCH: u64 = 5;
/// The guard added to ‖m_b‖ in d_hb.
const EPS: f64 = 1e-9;

fn peer(n: NodeId) -> PeerId {
    let mut secret = [0u8; 32];
    secret[..4].copy_from_slice(&n.to_le_bytes());
    Keypair::from_secret(secret).peer_id()
}

/// A sketch whose first component is `x` and whose others are 0.
fn sk(x: f32) -> Sketch {
    let mut s = [0f32; SKETCH_LEN];
    s[0] = x;
    s
}

/// An honest hoster: its commit matches its reveal under its own identity.
fn hoster(node: NodeId, span_start: u32, sketches: Vec<Sketch>) -> HosterInput {
    let span_end = span_start + sketches.len() as u32;
    let reveal = HosterReveal {
        salt: [node as u8; 16],
        body: HosterRevealBody {
            span_start,
            span_end,
            sketches,
        },
    };
    let writer = peer(node);
    HosterInput {
        node,
        commit: Some(reveal.commit(EPOCH, &writer)),
        writer,
        reveal: Some(reveal),
    }
}

fn validator(node: NodeId, scores: Vec<(NodeId, f64)>) -> ValidatorInput {
    let reveal = ValidatorReveal {
        salt: [node as u8; 16],
        scores,
    };
    let writer = peer(node);
    ValidatorInput {
        node,
        commit: Some(reveal.commit(EPOCH, &writer)),
        writer,
        reveal: Some(reveal),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

fn assert_scores(got: &BTreeMap<NodeId, f64>, want: &[(NodeId, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (node, w) in want {
        assert!(
            close(got[node], *w),
            "node {node}: got {}, want {w}; all {got:?}",
            got[node]
        );
    }
}

#[test]
fn hoster_scores_by_hand() {
    // Two blocks. Block 0: A = 1, B = 1, C = 4 -> m = 2 (three rows, none
    // dropped); d = 0.5, 0.5, 1. Block 1: A = 2, C = 2 -> m = 2, d = 0.
    // q_A = 1/(1 + 0.25) = 0.8, s_A = 0.8 * 2/2
    // q_B = 1/(1 + 0.5) = 2/3, s_B = 2/3 * 1/2 = 1/3
    // q_C = 1/(1 + 0.5) = 2/3, s_C = 2/3 * 2/2 = 2/3
    let inputs = vec![
        hoster(1, 0, vec![sk(1.0), sk(2.0)]),
        hoster(2, 0, vec![sk(1.0)]),
        hoster(3, 0, vec![sk(4.0), sk(2.0)]),
    ];
    // (The divisor is ‖m_b‖ + 1e-9, so 0.5 is really 1/(2 + 1e-9).)
    let d = |dist: f64, m: f64| dist / (m + EPS);
    let (q_a, q_b, q_c) = (
        1.0 / (1.0 + (d(1.0, 2.0) + d(0.0, 2.0)) / 2.0),
        1.0 / (1.0 + d(1.0, 2.0)),
        1.0 / (1.0 + (d(2.0, 2.0) + d(0.0, 2.0)) / 2.0),
    );
    assert!((q_a - 0.8).abs() < 1e-9 && (q_b - 2.0 / 3.0).abs() < 1e-9);
    let p = ScoreParams::default();
    let raw = hoster_raw_scores(&p, EPOCH, 2, &inputs).unwrap();
    let (s_a, s_b, s_c) = (q_a, q_b * 0.5, q_c);
    assert_scores(&raw, &[(1, s_a), (2, s_b), (3, s_c)]);
    // Normalised to 0.4 (total ~1.8).
    let total = s_a + s_b + s_c;
    let norm = hoster_scores(&p, EPOCH, 2, &inputs).unwrap();
    assert_scores(
        &norm,
        &[
            (1, s_a * 0.4 / total),
            (2, s_b * 0.4 / total),
            (3, s_c * 0.4 / total),
        ],
    );
    assert!(close(norm.values().sum::<f64>(), 0.4));
}

#[test]
fn noisy_hoster_is_dropped_from_the_reference_and_scores_lowest() {
    // One block, sketches 1, 1, 1, 1 and 11 (the noisy one, node 3):
    // distances to the plain mean 3 are 2, 2, 2, 2, 8 -> IQR 0 drops 8,
    // m = 1; honest d = 0 (q = 1), noisy d = 10 (q = 1/11).
    let inputs = vec![
        hoster(1, 0, vec![sk(1.0)]),
        hoster(2, 0, vec![sk(1.0)]),
        hoster(3, 0, vec![sk(11.0)]),
        hoster(4, 0, vec![sk(1.0)]),
        hoster(5, 0, vec![sk(1.0)]),
    ];
    let p = ScoreParams::default();
    let raw = hoster_raw_scores(&p, EPOCH, 1, &inputs).unwrap();
    let noisy = 1.0 / (1.0 + 10.0 / (1.0 + EPS));
    assert_scores(&raw, &[(1, 1.0), (2, 1.0), (3, noisy), (4, 1.0), (5, 1.0)]);
    let norm = hoster_scores(&p, EPOCH, 1, &inputs).unwrap();
    let total = 4.0 + noisy;
    assert!(close(norm[&1], 0.4 / total));
    assert!(close(norm[&3], 0.4 * noisy / total));
    let lowest = norm.iter().min_by(|a, b| a.1.total_cmp(b.1)).unwrap();
    assert_eq!(*lowest.0, 3);
}

#[test]
fn noisy_hoster_among_three_still_scores_lowest() {
    // With three rows the filter keeps everyone, but the noisy output is
    // still farthest from the mean: 1, 1, 4 -> m = 2, d = 0.5, 0.5, 1.
    let inputs = vec![
        hoster(1, 0, vec![sk(1.0)]),
        hoster(2, 0, vec![sk(4.0)]),
        hoster(3, 0, vec![sk(1.0)]),
    ];
    let raw = hoster_raw_scores(&ScoreParams::default(), EPOCH, 1, &inputs).unwrap();
    let q = |dist: f64| 1.0 / (1.0 + dist / (2.0 + EPS));
    assert_scores(&raw, &[(1, q(1.0)), (2, q(2.0)), (3, q(1.0))]);
    assert!((q(2.0) - 0.5).abs() < 1e-9);
}

#[test]
fn copied_commit_scores_zero() {
    // Node 2 republishes node 1's commit. Whether it then reveals node 1's
    // reveal or an honest one of its own, the reveal does not hash to that
    // commit under node 2's identity: 0. Node 1 is unaffected.
    let honest = hoster(1, 0, vec![sk(1.0)]);
    let copy_of_reveal = HosterInput {
        node: 2,
        writer: peer(2),
        commit: honest.commit,
        reveal: honest.reveal.clone(),
    };
    let own_reveal = HosterInput {
        commit: honest.commit,
        ..hoster(2, 0, vec![sk(1.0)])
    };
    let p = ScoreParams::default();
    for copier in [copy_of_reveal, own_reveal] {
        let inputs = vec![honest.clone(), copier, hoster(3, 0, vec![sk(1.0)])];
        let raw = hoster_raw_scores(&p, EPOCH, 1, &inputs).unwrap();
        assert_scores(&raw, &[(1, 1.0), (2, 0.0), (3, 1.0)]);
    }
}

#[test]
fn missing_or_mismatching_records_score_zero() {
    let p = ScoreParams::default();
    let no_commit = HosterInput {
        commit: None,
        ..hoster(2, 0, vec![sk(1.0)])
    };
    let no_reveal = HosterInput {
        reveal: None,
        ..hoster(3, 0, vec![sk(1.0)])
    };
    let mut changed = hoster(4, 0, vec![sk(1.0)]);
    changed.reveal.as_mut().unwrap().body.sketches[0][1] = 0.5; // not what was committed
    let out_of_model = hoster(5, 1, vec![sk(1.0)]); // block 1 of a 1-block model
    let other_epoch = {
        let mut h = hoster(6, 0, vec![sk(1.0)]);
        h.commit = Some(h.reveal.as_ref().unwrap().commit(EPOCH - 1, &h.writer));
        h
    };
    let inputs = vec![
        hoster(1, 0, vec![sk(3.0)]),
        no_commit,
        no_reveal,
        changed,
        out_of_model,
        other_epoch,
    ];
    let raw = hoster_raw_scores(&p, EPOCH, 1, &inputs).unwrap();
    // Only node 1 counts; alone on its block it is its own reference.
    assert_scores(
        &raw,
        &[(1, 1.0), (2, 0.0), (3, 0.0), (4, 0.0), (5, 0.0), (6, 0.0)],
    );
    // Nobody valid: all zero, and normalisation keeps zeros.
    let nobody = hoster_scores(&p, EPOCH, 1, &inputs[1..]).unwrap();
    assert!(nobody.values().all(|s| *s == 0.0));
    // The same node twice is an input error.
    let dup = vec![hoster(1, 0, vec![sk(1.0)]), hoster(1, 0, vec![sk(1.0)])];
    assert_eq!(
        hoster_raw_scores(&p, EPOCH, 1, &dup),
        Err(Error::DuplicateNode(1))
    );
}

/// Five validators about hosters 10 and 11 (values exact in binary).
/// Hoster 10: .25 .25 .25 .25 .0625 -> mean .2125, distances
///   .0375 x4, .15; Q1 = Q3 = .0375 -> V5 dropped; ref = .25.
/// Hoster 11: .125 .125 .125 .1375 .3125 -> mean .165, distances
///   .04 .04 .04 .0275 .1475; Q1 = Q3 = .04 -> only V1-V3 kept; ref = .125.
/// dev: V1-V3 0; V4 .0125/.375 = 1/30 -> quality 2/3; V5 .375/.375 = 1 -> 0.
fn five_validators() -> Vec<ValidatorInput> {
    vec![
        validator(21, vec![(10, 0.25), (11, 0.125)]),
        validator(22, vec![(10, 0.25), (11, 0.125)]),
        validator(23, vec![(10, 0.25), (11, 0.125)]),
        validator(24, vec![(10, 0.25), (11, 0.1375)]),
        validator(25, vec![(10, 0.0625), (11, 0.3125)]),
    ]
}

#[test]
fn validator_scores_by_hand() {
    let p = ScoreParams::default();
    let raw = validator_raw_scores(&p, EPOCH, &five_validators()).unwrap();
    assert_scores(
        &raw,
        &[(21, 1.0), (22, 1.0), (23, 1.0), (24, 2.0 / 3.0), (25, 0.0)],
    );
    let norm = validator_scores(&p, EPOCH, &five_validators()).unwrap();
    let total = 3.0 + 2.0 / 3.0;
    assert_scores(
        &norm,
        &[
            (21, 0.6 / total),
            (22, 0.6 / total),
            (23, 0.6 / total),
            (24, 0.4 / total),
            (25, 0.0),
        ],
    );
    assert!(close(norm.values().sum::<f64>(), 0.6));
}

#[test]
fn validator_whose_reveal_mismatches_its_commit_scores_zero() {
    let p = ScoreParams::default();
    let mut inputs = five_validators();
    // V26 reveals the consensus scores but had committed to others; V27
    // committed and never revealed.
    let mut v26 = validator(26, vec![(10, 0.25), (11, 0.125)]);
    v26.commit = Some(
        ValidatorReveal {
            salt: [26; 16],
            scores: vec![(10, 0.3), (11, 0.125)],
        }
        .commit(EPOCH, &v26.writer),
    );
    let v27 = ValidatorInput {
        reveal: None,
        ..validator(27, vec![(10, 0.25), (11, 0.125)])
    };
    inputs.extend([v26, v27]);
    let raw = validator_raw_scores(&p, EPOCH, &inputs).unwrap();
    // They score 0 and do not feed the reference: the others score as in
    // `validator_scores_by_hand`.
    assert_scores(
        &raw,
        &[
            (21, 1.0),
            (22, 1.0),
            (23, 1.0),
            (24, 2.0 / 3.0),
            (25, 0.0),
            (26, 0.0),
            (27, 0.0),
        ],
    );
    // With a matching commit the same reveal would have scored 1.
    inputs[5] = validator(26, vec![(10, 0.25), (11, 0.125)]);
    assert_eq!(validator_raw_scores(&p, EPOCH, &inputs).unwrap()[&26], 1.0);
}

#[test]
fn attestation_tolerance() {
    let mine = vec![(1, FIXED_ONE), (2, 0)];
    // Within 10^-9 relative: 10^9 units off on 10^18.
    check_attestation(&mine, &[(1, FIXED_ONE - 1_000_000_000), (2, 0)]).unwrap();
    check_attestation(&mine, &[(1, FIXED_ONE + 1_000_000_000), (2, 0)]).unwrap();
    let err = check_attestation(&mine, &[(1, FIXED_ONE - 1_000_000_001), (2, 0)]).unwrap_err();
    assert!(err.to_string().contains("node 1"), "{err}");
    assert!(check_attestation(&mine, &[(1, FIXED_ONE), (2, 1)]).is_err());
    assert!(check_attestation(&mine, &[(1, FIXED_ONE)]).is_err());
    assert!(check_attestation(&mine, &[(1, FIXED_ONE), (3, 0)]).is_err());
    assert!(check_attestation(&[(2, 0), (1, FIXED_ONE)], &[(2, 0), (1, FIXED_ONE)]).is_err());
}

#[test]
fn proposal_floors_combines_and_sorts() {
    let hosters = BTreeMap::from([(3, 0.1), (1, 0.3)]);
    let validators = BTreeMap::from([(7, 0.6), (5, 0.0)]);
    let prop = proposal(&hosters, &validators).unwrap();
    // 0.1 * 10^18 in f64 is 100000000000000000 exactly after floor? f64(0.1)
    // is slightly above 0.1, and 10^17 is representable: floor gives 10^17.
    assert_eq!(
        prop,
        vec![
            (1, (0.3f64 * 1e18).floor() as u128),
            (3, 100_000_000_000_000_000),
            (5, 0),
            (7, (0.6f64 * 1e18).floor() as u128)
        ]
    );
    let bytes = encode_proposal(&prop);
    assert_eq!(bytes.len(), 4 + 4 * (4 + 16));
    assert_eq!(&bytes[..8], &[4, 0, 0, 0, 1, 0, 0, 0]);
    assert!(proposal(&BTreeMap::from([(1, f64::NAN)]), &BTreeMap::new()).is_err());
    assert!(to_fixed(-0.1).is_err());
}

/// The whole pipeline from DHT view to proposal bytes.
fn proposal_bytes(hosters: &[HosterInput], validators: &[ValidatorInput]) -> Vec<u8> {
    let p = ScoreParams::default();
    let hs = hoster_scores(&p, EPOCH, 3, hosters).unwrap();
    let vs = validator_scores(&p, EPOCH, validators).unwrap();
    encode_proposal(&proposal(&hs, &vs).unwrap())
}

fn sample_view() -> (Vec<HosterInput>, Vec<ValidatorInput>) {
    let hosters = vec![
        hoster(1, 0, vec![sk(1.0), sk(2.0), sk(3.0)]),
        hoster(2, 0, vec![sk(1.1), sk(2.1)]),
        hoster(3, 1, vec![sk(1.9), sk(2.9)]),
        hoster(4, 2, vec![sk(9.0)]),
        hoster(6, 0, vec![sk(0.9), sk(2.2), sk(3.1)]),
    ];
    (hosters, five_validators())
}

#[test]
fn two_scorers_with_the_same_view_produce_identical_bytes() {
    let (hosters, validators) = sample_view();
    let a = proposal_bytes(&hosters, &validators);
    let mut h2 = hosters.clone();
    h2.reverse();
    h2.swap(0, 2);
    let mut v2 = validators.clone();
    v2.rotate_left(2);
    assert_eq!(a, proposal_bytes(&h2, &v2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_order_gives_the_same_proposal(seed in any::<u64>()) {
        let (mut hosters, mut validators) = sample_view();
        let expected = proposal_bytes(&hosters, &validators);
        // Fisher-Yates driven by the proptest seed.
        let mut s = seed;
        let mut next = |n: usize| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 33) as usize % n };
        for i in (1..hosters.len()).rev() { let j = next(i + 1); hosters.swap(i, j); }
        for i in (1..validators.len()).rev() { let j = next(i + 1); validators.swap(i, j); }
        prop_assert_eq!(expected, proposal_bytes(&hosters, &validators));
    }
}

#[test]
fn a_convicted_hoster_scores_zero_and_its_share_goes_to_the_others() {
    let params = ScoreParams::default();
    let inputs: Vec<HosterInput> = (1..=3).map(|n| hoster(n, 0, vec![sk(1.0); 2])).collect();
    let plain = hoster_scores(&params, EPOCH, 2, &inputs).unwrap();
    assert!(plain.values().all(|s| close(*s, 0.4 / 3.0)));
    let convicted = BTreeSet::from([2]);
    let scores = hoster_scores_with_evidence(&params, EPOCH, 2, &inputs, &convicted).unwrap();
    assert_eq!(scores[&2], 0.0);
    assert!(
        close(scores[&1], 0.2) && close(scores[&3], 0.2),
        "{scores:?}"
    );
    // An unknown id in the convicted set changes nothing.
    let other = hoster_scores_with_evidence(&params, EPOCH, 2, &inputs, &BTreeSet::from([9]));
    assert_eq!(other.unwrap(), plain);
}
