//! `BlockSpan::forward_each_block`: every block of a span run on its own, so
//! hosters with different spans get comparable per-block outputs (SPEC §6).

use hypertensor_model::{BlockSpan, Embedding, GgufFile, HiddenStates};

use crate::{model, model_path};

/// A few tokens' embeddings: realistic states to feed a block.
fn input(gguf: &GgufFile) -> HiddenStates {
    let tokens = model()
        .tokenizer()
        .encode("The capital of France is", false)
        .unwrap();
    Embedding::load(gguf).unwrap().forward(&tokens).unwrap()
}

/// What a one-block span `b..b + 1` gives from `forward` with a new cache.
fn alone(gguf: &GgufFile, b: usize, input: &HiddenStates) -> HiddenStates {
    let span = BlockSpan::load(gguf, b..b + 1).unwrap();
    let mut hidden = input.clone();
    span.forward(&mut hidden, &mut span.new_cache()).unwrap();
    hidden
}

#[test]
fn each_block_output_equals_a_one_block_span_bit_for_bit() {
    let gguf = GgufFile::open(model_path()).unwrap();
    let input = input(&gguf);
    let span = BlockSpan::load(&gguf, 3..6).unwrap();
    let outputs = span.forward_each_block(&input).unwrap();
    assert_eq!(outputs.len(), 3);
    for (i, output) in outputs.iter().enumerate() {
        let expected = alone(&gguf, i + 3, &input);
        assert_eq!(output.width(), input.width());
        assert_eq!(output.n_tokens(), input.n_tokens());
        let same_bits = output
            .as_slice()
            .iter()
            .zip(expected.as_slice())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_bits, "block {} differs from its one-block span", i + 3);
        // Each block really transforms its input (else the test is vacuous).
        assert_ne!(output.as_slice(), input.as_slice());
    }
    // Different blocks give different outputs from the same input.
    assert_ne!(outputs[0].as_slice(), outputs[1].as_slice());
}

#[test]
fn a_whole_model_span_matches_single_block_spans_whatever_the_split() {
    let gguf = GgufFile::open(model_path()).unwrap();
    let input = input(&gguf);
    let whole = BlockSpan::load(&gguf, 0..30).unwrap();
    let outputs = whole.forward_each_block(&input).unwrap();
    assert_eq!(outputs.len(), 30);
    for b in [0, 7, 15, 29] {
        let expected = alone(&gguf, b, &input);
        let same_bits = outputs[b]
            .as_slice()
            .iter()
            .zip(expected.as_slice())
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same_bits,
            "block {b} of 0..30 differs from span {b}..{}",
            b + 1
        );
    }
    // Running one block does not disturb the span: the ordinary forward
    // still gives what it gives on a freshly loaded span.
    let mut once = input.clone();
    whole.forward(&mut once, &mut whole.new_cache()).unwrap();
    let fresh = BlockSpan::load(&gguf, 0..30).unwrap();
    let mut twice = input.clone();
    fresh.forward(&mut twice, &mut fresh.new_cache()).unwrap();
    assert_eq!(once.as_slice(), twice.as_slice());
}

#[test]
fn each_block_refuses_states_of_the_wrong_width() {
    let gguf = GgufFile::open(model_path()).unwrap();
    let span = BlockSpan::load(&gguf, 3..6).unwrap();
    let width = span.config().hidden_size;
    let wrong = HiddenStates::new(width - 1, vec![0.5; 2 * (width - 1)]).unwrap();
    let err = span.forward_each_block(&wrong).unwrap_err();
    assert!(err.to_string().contains("width"), "{err}");
    // The span still works afterwards.
    let right = HiddenStates::new(width, vec![0.5; 2 * width]).unwrap();
    assert_eq!(span.forward_each_block(&right).unwrap().len(), 3);
}

#[test]
fn each_block_refuses_more_tokens_than_the_context() {
    let gguf = GgufFile::open(model_path()).unwrap();
    let span = BlockSpan::load(&gguf, 3..4).unwrap();
    let config = span.config();
    let n = config.context_length + 1;
    let too_long =
        HiddenStates::new(config.hidden_size, vec![0.0; n * config.hidden_size]).unwrap();
    let err = span.forward_each_block(&too_long).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}
