//! Spans load alone and compose into the whole model.

use hypertensor_model::{BlockSpan, Embedding, GgufFile, Head, LanguageModel};

use crate::{model, model_path};

#[test]
fn three_spans_of_ten_blocks_equal_the_whole_model() {
    let gguf = GgufFile::open(model_path()).unwrap();
    let embedding = Embedding::load(&gguf).unwrap();
    let head = Head::load(&gguf, Some(&embedding)).unwrap();
    let spans: Vec<BlockSpan> = [0..10, 10..20, 20..30]
        .into_iter()
        .map(|r| BlockSpan::load(&gguf, r).unwrap())
        .collect();
    let mut caches: Vec<_> = spans.iter().map(BlockSpan::new_cache).collect();
    let mut whole = model().session();

    let prompt = model()
        .tokenizer()
        .encode("The capital of France is", false)
        .unwrap();
    let mut steps = vec![prompt];
    // Then three single-token decode steps, reusing the caches.
    steps.extend([[504u32], [3575], [30]].map(|t| t.to_vec()));
    for step in steps {
        let mut hidden = embedding.forward(&step).unwrap();
        for (span, cache) in spans.iter().zip(&mut caches) {
            span.forward(&mut hidden, cache).unwrap();
        }
        let split = head.forward_last(&hidden).unwrap();
        let full = whole.forward(&step).unwrap();
        assert_eq!(split.len(), full.len());
        let max_diff = split
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // Same kernels on the same inputs in the same order: identical bits.
        assert_eq!(
            max_diff, 0.0,
            "spans differ from the whole model by {max_diff}"
        );
    }
}

#[test]
fn a_span_reads_only_its_own_tensors() {
    let gguf = GgufFile::open(model_path()).unwrap();
    let span = BlockSpan::load(&gguf, 10..20).unwrap();
    assert_eq!(span.range(), 10..20);
    let read = gguf.tensors_read();
    assert_eq!(read.len(), 10 * 9, "9 tensors per block: {read:?}");
    for name in &read {
        let block: usize = name
            .strip_prefix("blk.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("read a tensor outside any block: {name}"));
        assert!((10..20).contains(&block), "read {name}");
    }
    // The embedding alone reads only the embedding table.
    let gguf = GgufFile::open(model_path()).unwrap();
    Embedding::load(&gguf).unwrap();
    assert_eq!(gguf.tensors_read(), vec!["token_embd.weight".to_string()]);
}

#[test]
fn invalid_spans_are_refused() {
    let gguf = GgufFile::open(model_path()).unwrap();
    for range in [5..5, 20..31, 30..40] {
        let err = BlockSpan::load(&gguf, range.clone()).unwrap_err();
        assert!(err.to_string().contains("30 blocks"), "{range:?}: {err}");
    }
    assert!(gguf.tensors_read().is_empty());
}

#[test]
fn truncating_a_cache_rewinds_the_sequence() {
    let gguf = GgufFile::open(model_path()).unwrap();
    let embedding = Embedding::load(&gguf).unwrap();
    let span = BlockSpan::load(&gguf, 0..2).unwrap();
    let tokens = [1u32, 2, 3, 4];
    let mut cache = span.new_cache();
    let mut first = embedding.forward(&tokens).unwrap();
    span.forward(&mut first, &mut cache).unwrap();
    span.truncate(&mut cache, 2);
    assert_eq!(cache.positions(), 2);
    let mut again = embedding.forward(&tokens[2..]).unwrap();
    span.forward(&mut again, &mut cache).unwrap();
    assert_eq!(again.as_slice(), first.last_rows(2).unwrap().as_slice());
}
