use hypertensor_primitives::Keypair;

use super::*;

const WIDTH: usize = 4;
const MODEL: &str = "smollm2";

fn genesis() -> H256 {
    H256([7; 32])
}

fn encode(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn transcript() -> Transcript {
    let mut t = Transcript::new("smollm2", 0, 10, Encoding::F32);
    t.step(0, 2, &encode(&[0.5; 2 * WIDTH]));
    t
}

/// `server`'s signed answer `output` to the step of [`transcript`],
/// showing the row that differs in the tests (row 1).
fn receipt(server: &Keypair, output: &[f32]) -> Receipt {
    let client = Keypair::dev("client").peer_id();
    let session = [3; 16];
    let inputs = transcript().digest();
    let bytes = encode(output);
    let (rows, digest) = output_digest(&bytes, WIDTH * 4);
    let fields = ReceiptFields {
        client: &client,
        session: &session,
        model: "smollm2",
        start: 0,
        end: 10,
        encoding: Encoding::F32,
        position: 0,
        n_tokens: 2,
        inputs: &inputs,
        output: &digest,
    };
    let signature = fields.sign(server, &genesis());
    let row = 1.min(rows.len() - 1);
    let row_bytes = bytes.chunks(WIDTH * 4).nth(row).unwrap().to_vec();
    Receipt {
        server: server.peer_id(),
        client,
        session,
        model: "smollm2".into(),
        start: 0,
        end: 10,
        encoding: Encoding::F32,
        position: 0,
        n_tokens: 2,
        inputs,
        rows,
        row: row as u32,
        row_bytes,
        signature,
    }
}

const HONEST: [f32; 8] = [1.0, -2.0, 0.5, 3.0, 0.25, 0.0, -1.5, 2.0];

fn noisy() -> Vec<f32> {
    HONEST.iter().map(|v| v * 1.1 + 0.05).collect()
}

fn keys() -> (Keypair, Keypair, Keypair) {
    (
        Keypair::dev("cheat"),
        Keypair::dev("honest-a"),
        Keypair::dev("honest-b"),
    )
}

fn two_to_one() -> Evidence {
    let (cheat, a, b) = keys();
    Evidence {
        accused: receipt(&cheat, &noisy()),
        witnesses: vec![receipt(&a, &HONEST), receipt(&b, &HONEST)],
    }
}

#[test]
fn two_agreeing_witnesses_convict_the_server_that_deviates() {
    let evidence = two_to_one();
    let bytes = evidence.encode();
    let back = Evidence::decode(&bytes).unwrap();
    assert_eq!(back, evidence);
    assert_eq!(
        back.verify(&genesis(), MODEL, WIDTH).unwrap(),
        &keys().0.peer_id()
    );
    // Rounding-sized differences are not a disagreement: f16 rounding of
    // every value is within the tolerance.
    let (_, a, b) = keys();
    let rounded: Vec<f32> = HONEST.iter().map(|v| v * (1.0 + 4.9e-4)).collect();
    let not_guilty = Evidence {
        accused: receipt(&keys().0, &rounded),
        witnesses: vec![receipt(&a, &HONEST), receipt(&b, &HONEST)],
    };
    assert!(not_guilty.verify(&genesis(), MODEL, WIDTH).is_err());
}

#[test]
fn a_non_finite_or_misshapen_output_convicts_on_its_own() {
    let (cheat, ..) = keys();
    let mut nan = HONEST.to_vec();
    nan[5] = f32::NAN;
    // A NaN in the row shown; a row cut short; a third row.
    for output in [
        nan,
        HONEST[..7].to_vec(),
        [HONEST, [1.0; 8]].concat()[..12].to_vec(),
    ] {
        let evidence = Evidence {
            accused: receipt(&cheat, &output),
            witnesses: vec![],
        };
        assert_eq!(
            evidence.verify(&genesis(), MODEL, WIDTH).unwrap(),
            &cheat.peer_id()
        );
    }
    // An empty answer to a step of two rows, shown as no row.
    let mut empty = receipt(&cheat, &HONEST);
    let (rows, digest) = output_digest(&[], WIDTH * 4);
    let fields = ReceiptFields {
        client: &empty.client,
        session: &empty.session,
        model: "smollm2",
        start: 0,
        end: 10,
        encoding: Encoding::F32,
        position: 0,
        n_tokens: 2,
        inputs: &empty.inputs,
        output: &digest,
    };
    empty.signature = fields.sign(&cheat, &genesis());
    (empty.rows, empty.row, empty.row_bytes) = (rows, 0, Vec::new());
    let evidence = Evidence {
        accused: empty,
        witnesses: vec![],
    };
    assert_eq!(
        evidence.verify(&genesis(), MODEL, WIDTH).unwrap(),
        &cheat.peer_id()
    );
    let fine = Evidence {
        accused: receipt(&cheat, &HONEST),
        witnesses: vec![],
    };
    assert!(fine.verify(&genesis(), MODEL, WIDTH).is_err());
}

#[test]
fn forged_evidence_is_rejected() {
    let genesis = genesis();
    let (cheat, a, b) = keys();
    // A wrong signature.
    let mut forged = two_to_one();
    forged.accused.signature.0[0] ^= 1;
    assert!(forged.verify(&genesis, MODEL, WIDTH).is_err());
    // Another session's nonce than the one signed.
    let mut forged = two_to_one();
    forged.witnesses[1].session[0] ^= 1;
    assert!(forged.verify(&genesis, MODEL, WIDTH).is_err());
    // A row swapped for one the accused never signed, with or without its
    // hash.
    let mut forged = two_to_one();
    forged.accused.row_bytes = encode(&[9.0; 4]);
    assert!(forged.verify(&genesis, MODEL, WIDTH).is_err());
    forged.accused.rows[1] = sha256(&[&forged.accused.row_bytes]);
    assert!(forged.verify(&genesis, MODEL, WIDTH).is_err());
    // Witnesses showing another row than the accused.
    let mut forged = two_to_one();
    forged.witnesses[0].row = 0;
    forged.witnesses[0].row_bytes = encode(&HONEST[..4]);
    assert!(forged.verify(&genesis, MODEL, WIDTH).is_err());
    // Against a peer that did not sign: its id on another's receipt.
    let innocent = Keypair::dev("innocent");
    let mut forged = two_to_one();
    forged.accused.server = innocent.peer_id();
    assert!(forged.verify(&genesis, MODEL, WIDTH).is_err());
    // Another model's receipts (a server's key may serve several subnets).
    assert!(two_to_one().verify(&genesis, "gemma3", WIDTH).is_err());
    // Another chain's signing domain.
    assert!(two_to_one().verify(&H256([8; 32]), MODEL, WIDTH).is_err());
    // Witnesses of other inputs.
    let mut forged = two_to_one();
    let mut other = Transcript::new("smollm2", 0, 10, Encoding::F32);
    other.step(0, 2, &encode(&[0.25; 2 * WIDTH]));
    forged.witnesses[0].inputs = other.digest();
    assert!(forged.verify(&genesis, MODEL, WIDTH).is_err());
    // One witness twice, or the accused as its own witness.
    let twice = Evidence {
        accused: receipt(&cheat, &noisy()),
        witnesses: vec![receipt(&a, &HONEST), receipt(&a, &HONEST)],
    };
    assert!(twice.verify(&genesis, MODEL, WIDTH).is_err());
    let itself = Evidence {
        accused: receipt(&cheat, &noisy()),
        witnesses: vec![receipt(&a, &HONEST), receipt(&cheat, &HONEST)],
    };
    assert!(itself.verify(&genesis, MODEL, WIDTH).is_err());
    // Witnesses that disagree with each other decide nothing.
    let split = Evidence {
        accused: receipt(&cheat, &noisy()),
        witnesses: vec![receipt(&a, &HONEST), receipt(&b, &[5.0; 8])],
    };
    assert!(split.verify(&genesis, MODEL, WIDTH).is_err());
    // One witness is not a majority.
    let lone = Evidence {
        accused: receipt(&cheat, &noisy()),
        witnesses: vec![receipt(&a, &HONEST)],
    };
    assert!(lone.verify(&genesis, MODEL, WIDTH).is_err());
}

#[test]
fn decoding_is_bounded_and_refuses_garbage() {
    let bytes = two_to_one().encode();
    for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(Evidence::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    assert!(Evidence::decode(&[bytes.clone(), vec![0]].concat()).is_err());
    let mut version = bytes.clone();
    version[0] = 2;
    assert!(Evidence::decode(&version).is_err());
    assert!(Evidence::decode(&[1, 0xff, 0xff, 0xff, 0xff]).is_err());
}

#[test]
fn transcripts_differ_with_any_input_and_f16_decodes_exactly() {
    let base = transcript().digest();
    let mut other = Transcript::new("smollm2", 0, 10, Encoding::F32);
    other.step(1, 2, &encode(&[0.5; 2 * WIDTH]));
    assert_ne!(other.digest(), base);
    let mut other = Transcript::new("smollm2", 0, 11, Encoding::F32);
    other.step(0, 2, &encode(&[0.5; 2 * WIDTH]));
    assert_ne!(other.digest(), base);
    // A step sent again at its position (a rewind) replaces the first.
    let mut twice = Transcript::new("smollm2", 0, 10, Encoding::F32);
    twice.step(0, 2, &encode(&[0.25; 2 * WIDTH]));
    twice.step(0, 2, &encode(&[0.5; 2 * WIDTH]));
    assert_eq!(twice.digest(), base);
    let mut longer = transcript();
    longer.step(2, 1, &encode(&[1.0; WIDTH]));
    let after = longer.digest();
    longer.step(2, 1, &encode(&[1.0; WIDTH]));
    assert_eq!(longer.digest(), after);
    assert_ne!(after, base);

    for (bits, value) in [
        (0x3c00u16, 1.0f32),
        (0xc000, -2.0),
        (0x0001, 2f32.powi(-24)),
        (0x0200, 2f32.powi(-15)),
        (0x7bff, 65504.0),
        (0x8000, -0.0),
    ] {
        let decoded = Encoding::F16.decode(&bits.to_le_bytes()).unwrap();
        assert_eq!(decoded[0].to_bits(), value.to_bits(), "{bits:#06x}");
    }
    assert!(Encoding::F16.decode(&[0x00, 0x7c]).unwrap()[0].is_infinite());
    assert!(Encoding::F16.decode(&[0x01, 0x7c]).unwrap()[0].is_nan());
    assert!(Encoding::F16.decode(&[1, 2, 3]).is_none());
}

#[test]
fn a_record_files_several_pieces_and_every_one_must_hold() {
    let (cheat, ..) = keys();
    let mut nan = HONEST.to_vec();
    nan[4] = f32::INFINITY;
    let lone = Evidence {
        accused: receipt(&cheat, &nan),
        witnesses: vec![],
    };
    let record = encode_evidence_record(&[two_to_one(), lone.clone()]);
    assert_eq!(
        decode_evidence_record(&record).unwrap(),
        vec![two_to_one(), lone]
    );
    assert_eq!(
        verify_evidence_record(&record, &genesis(), MODEL, WIDTH)
            .unwrap()
            .iter()
            .map(|p| p.accused.server.clone())
            .collect::<Vec<_>>(),
        vec![cheat.peer_id(), cheat.peer_id()]
    );
    let mut forged = two_to_one();
    forged.accused.signature.0[5] ^= 1;
    let mixed = encode_evidence_record(&[two_to_one(), forged]);
    assert!(verify_evidence_record(&mixed, &genesis(), MODEL, WIDTH).is_err());
    let too_many = encode_evidence_record(&vec![two_to_one(); MAX_EVIDENCE_PER_RECORD + 1]);
    assert!(decode_evidence_record(&too_many).is_err());
    assert!(decode_evidence_record(&record[..record.len() - 1]).is_err());
}

#[test]
fn the_first_disagreement_names_the_row() {
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut b = a;
    assert_eq!(first_disagreement(&a, &b, 2), None);
    b[3] = 4.5;
    assert_eq!(first_disagreement(&a, &b, 2), Some(1));
    assert_eq!(first_disagreement(&a, &a[..4], 2), Some(2));
    b[3] = f32::NAN;
    assert_eq!(first_disagreement(&a, &b, 2), Some(1));
}
