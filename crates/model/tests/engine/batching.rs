//! Continuous batching on the real model: batched sequences get exactly
//! their solo results, long prompts are chunked without holding back
//! decode steps, and bad steps are refused at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypertensor_model::{
    BatchConfig, Batcher, BlockSpan, GenerationRequest, GgufFile, HiddenStates, LocalModel,
    ModelError, SamplingParams, StepOutput, generate,
};

use super::{model, model_path};

fn states(width: usize, rows: usize, seed: usize) -> HiddenStates {
    let data = (0..width * rows)
        .map(|i| (((i * 7 + seed * 131) % 97) as f32 - 48.0) * 0.01)
        .collect();
    HiddenStates::new(width, data).unwrap()
}

fn span(range: std::ops::Range<usize>) -> Arc<BlockSpan> {
    let gguf = GgufFile::open(model_path()).unwrap();
    Arc::new(BlockSpan::load(&gguf, range).unwrap())
}

#[test]
fn a_batch_of_sequences_at_different_positions_equals_each_run_alone() {
    let span = span(0..6);
    let width = span.config().hidden_size;
    // Three sequences with 0, 5 and 17 positions of history.
    let histories = [0, 5, 17];
    let mut solo_caches = Vec::new();
    for (s, &past) in histories.iter().enumerate() {
        let mut cache = span.new_cache();
        if past > 0 {
            span.forward(&mut states(width, past, s + 10), &mut cache)
                .unwrap();
        }
        solo_caches.push(cache);
    }
    let mut batch_caches = solo_caches.clone();
    // A prompt chunk, a decode step and a short prefill together.
    let inputs = [
        states(width, 9, 1),
        states(width, 1, 2),
        states(width, 4, 3),
    ];
    let mut solo_out = inputs.clone();
    for (hidden, cache) in solo_out.iter_mut().zip(&mut solo_caches) {
        span.forward(hidden, cache).unwrap();
    }
    let mut batch_out = inputs.clone();
    let mut entries: Vec<_> = batch_out.iter_mut().zip(batch_caches.iter_mut()).collect();
    span.forward_batch(&mut entries).unwrap();
    for s in 0..3 {
        assert_eq!(batch_out[s], solo_out[s], "sequence {s}'s outputs differ");
        assert_eq!(batch_caches[s].positions(), solo_caches[s].positions());
    }
    // The caches hold the same keys and values: the next step agrees too.
    let mut a = states(width, 1, 7);
    let mut b = a.clone();
    span.forward(&mut a, &mut solo_caches[2]).unwrap();
    span.forward(&mut b, &mut batch_caches[2]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_bad_entry_fails_the_whole_batch_naming_it_and_changes_nothing() {
    let span = span(0..2);
    let width = span.config().hidden_size;
    let mut good = states(width, 2, 1);
    let mut bad = states(width - 1, 1, 2);
    let (mut c1, mut c2) = (span.new_cache(), span.new_cache());
    let err = span
        .forward_batch(&mut [(&mut good, &mut c1), (&mut bad, &mut c2)])
        .unwrap_err();
    assert!(err.to_string().contains("sequence 1 of the batch"), "{err}");
    assert_eq!((c1.positions(), c2.positions()), (0, 0));
    assert_eq!(good, states(width, 2, 1), "nothing ran");
}

fn greedy(prompt: &str, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: model().tokenizer().encode_with_bos(prompt, false).unwrap(),
        max_tokens,
        // The default is greedy.
        sampling: SamplingParams::default(),
        stop: Vec::new(),
    }
}

#[test]
fn sixteen_concurrent_greedy_sequences_each_produce_their_solo_tokens() {
    let prompts: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "Item {i}: the {} of a small town is",
                ["history", "mayor", "river", "market"][i % 4]
            )
        })
        .collect();
    let solo: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut session = model().session();
            generate(&mut session, model().tokenizer(), &greedy(p, 24), |_| {
                hypertensor_model::Flow::Continue
            })
            .unwrap()
            .tokens
        })
        .collect();
    let batched = LocalModel::load(model_path())
        .unwrap()
        .batched(BatchConfig::default());
    let batched = &batched;
    let together: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                scope.spawn(move || {
                    let mut session = batched.session();
                    generate(
                        &mut session,
                        batched.model().tokenizer(),
                        &greedy(p, 24),
                        |_| hypertensor_model::Flow::Continue,
                    )
                    .unwrap()
                    .tokens
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in solo.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "sequence {i} differs when batched");
    }
    let stats = batched.batcher().stats();
    assert!(
        stats.largest_batch >= 8,
        "sixteen lockstep sequences should share batches: {stats:?}"
    );
    assert!(stats.batches < stats.steps, "{stats:?}");
}

#[test]
fn a_long_prompt_runs_in_chunks_and_a_later_decode_step_finishes_first() {
    let span = span(0..4);
    let width = span.config().hidden_size;
    let config = BatchConfig {
        max_batch_tokens: 48,
        chunk_tokens: 32,
        gather_wait: Duration::from_millis(50),
    };
    let batcher = Batcher::start(span.clone(), None, config);
    let order = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let prompt = states(width, 200, 4);
    let decode = states(width, 1, 5);
    // Both sequences are open, so the first batch waits for the second's
    // step (its gathering wait is long): both arrive in the first batch.
    let (_a, _b) = (batcher.open(), batcher.open());
    for (name, input) in [("prompt", prompt.clone()), ("decode", decode.clone())] {
        let (order, tx) = (order.clone(), tx.clone());
        batcher.submit(
            span.new_cache(),
            input,
            Box::new(move |(cache, out)| {
                order.lock().unwrap().push(name);
                tx.send((name, cache, out)).unwrap();
            }),
        );
    }
    let mut results = std::collections::HashMap::new();
    for _ in 0..2 {
        let (name, cache, out) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        results.insert(name, (cache, out.unwrap()));
    }
    assert_eq!(*order.lock().unwrap(), vec!["decode", "prompt"]);
    let stats = batcher.stats();
    // 200 rows in chunks of 32: seven batches, the first with the decode.
    assert_eq!(stats.batches, 7, "{stats:?}");
    assert_eq!(stats.largest_batch, 33, "{stats:?}");
    for (name, input) in [("prompt", prompt), ("decode", decode)] {
        let mut alone = input.clone();
        let mut cache = span.new_cache();
        span.forward(&mut alone, &mut cache).unwrap();
        let (got_cache, got) = &results[name];
        assert_eq!(
            *got,
            StepOutput::Hidden(alone),
            "{name} differs from its solo run"
        );
        assert_eq!(got_cache.positions(), cache.positions());
    }
}

#[test]
fn bad_steps_are_answered_at_once_with_the_cache_unchanged() {
    let span = span(0..2);
    let width = span.config().hidden_size;
    let batcher = Batcher::start(span.clone(), None, BatchConfig::default());
    let (cache, out) = batcher.run(span.new_cache(), states(width + 1, 1, 0));
    assert!(matches!(out, Err(ModelError::InvalidInput(_))), "{out:?}");
    assert_eq!(cache.positions(), 0);
    let context = span.config().context_length;
    let (cache, out) = batcher.run(span.new_cache(), states(width, context + 1, 0));
    assert!(
        matches!(out, Err(ModelError::ContextOverflow { .. })),
        "{out:?}"
    );
    assert_eq!(cache.positions(), 0);
    let other = span_cache_of_other_size();
    let (_, out) = batcher.run(other, states(width, 1, 0));
    assert!(out.unwrap_err().to_string().contains("another size"));
    assert_eq!(batcher.stats().batches, 0, "nothing ran");
}

fn span_cache_of_other_size() -> hypertensor_model::SpanCache {
    span(0..3).new_cache()
}
