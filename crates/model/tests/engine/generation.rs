//! The generation loop on the real model: budgets, stop strings, end of
//! generation, streaming and seeded sampling.

use hypertensor_model::{
    ChatMessage, FinishReason, Flow, Generation, GenerationRequest, SamplingParams, generate,
};

use crate::model;

fn run(
    prompt: &str,
    max_tokens: usize,
    sampling: SamplingParams,
    stop: &[&str],
) -> (Generation, Vec<String>) {
    let llm = model();
    let request = GenerationRequest {
        prompt: llm.tokenizer().encode_with_bos(prompt, false).unwrap(),
        max_tokens,
        sampling,
        stop: stop.iter().map(|s| s.to_string()).collect(),
    };
    let mut chunks = Vec::new();
    let mut session = llm.session();
    let out = generate(&mut session, llm.tokenizer(), &request, |t| {
        chunks.push(t.to_string());
        Flow::Continue
    })
    .unwrap();
    (out, chunks)
}

fn greedy() -> SamplingParams {
    SamplingParams::default()
}

#[test]
fn the_token_budget_is_respected_and_streaming_matches_the_result() {
    let (out, chunks) = run("Once upon a time", 12, greedy(), &[]);
    assert_eq!(out.tokens.len(), 12);
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(chunks.concat(), out.text);
    assert_eq!(
        out.text,
        model().tokenizer().decode(&out.tokens, true).unwrap()
    );
    assert!(!out.text.trim().is_empty());
}

#[test]
fn greedy_generation_is_deterministic() {
    let (a, _) = run("The three primary colors are", 16, greedy(), &[]);
    let (b, _) = run("The three primary colors are", 16, greedy(), &[]);
    assert_eq!(a, b);
}

#[test]
fn a_stop_string_ends_generation_before_it() {
    let (full, _) = run("The three primary colors are", 24, greedy(), &[]);
    // Stop at a word from the middle of the uninterrupted continuation.
    let words: Vec<&str> = full.text.split_whitespace().collect();
    let stop = words[words.len() / 2];
    let cut = full.text.find(stop).unwrap();
    let (out, chunks) = run("The three primary colors are", 24, greedy(), &[stop]);
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.text, full.text[..cut]);
    assert_eq!(chunks.concat(), out.text);
    assert!(out.tokens.len() < full.tokens.len());
}

#[test]
fn seeded_sampling_repeats_and_seeds_differ() {
    let params = |seed| SamplingParams {
        temperature: 1.0,
        top_k: Some(40),
        top_p: Some(0.95),
        seed,
    };
    let (a, _) = run("My favourite animal is", 20, params(7), &[]);
    let (b, _) = run("My favourite animal is", 20, params(7), &[]);
    let (c, _) = run("My favourite animal is", 20, params(8), &[]);
    assert_eq!(a.tokens, b.tokens);
    assert_ne!(a.tokens, c.tokens);
}

#[test]
fn a_chat_answer_ends_at_the_end_of_turn_token() {
    let llm = model();
    let template = llm
        .chat_template()
        .expect("the default model has a chat template");
    let prompt = template
        .render(&[ChatMessage::new("user", "Say hello.")], true)
        .unwrap();
    let request = GenerationRequest {
        prompt: llm.tokenizer().encode(&prompt, true).unwrap(),
        max_tokens: 200,
        sampling: greedy(),
        stop: vec![],
    };
    let mut session = llm.session();
    let out = generate(&mut session, llm.tokenizer(), &request, |_| Flow::Continue).unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop, "{:?}", out.text);
    assert!(!out.text.contains("<|im_end|>"));
    assert!(out.text.to_lowercase().contains("hello"), "{:?}", out.text);
}

#[test]
fn the_caller_can_cancel() {
    let llm = model();
    let request = GenerationRequest {
        prompt: llm.tokenizer().encode("Count: 1, 2, 3,", false).unwrap(),
        max_tokens: 50,
        sampling: greedy(),
        stop: vec![],
    };
    let mut session = llm.session();
    let mut calls = 0;
    let out = generate(&mut session, llm.tokenizer(), &request, |_| {
        calls += 1;
        if calls == 3 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert!(out.tokens.len() < 50);
}

#[test]
fn the_caller_is_asked_after_every_token_even_while_text_is_held_back() {
    let llm = model();
    let request = GenerationRequest {
        prompt: llm.tokenizer().encode("Count: 1, 2, 3,", false).unwrap(),
        max_tokens: 50,
        sampling: greedy(),
        // Every piece could start this stop string, so no text is certain
        // yet: cancellation must not wait for text.
        stop: vec![" 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 never".into()],
    };
    let mut session = llm.session();
    let mut calls = 0;
    let out = generate(&mut session, llm.tokenizer(), &request, |_| {
        calls += 1;
        Flow::Stop
    })
    .unwrap();
    assert_eq!(out.finish_reason, FinishReason::Cancelled);
    assert_eq!(calls, 1);
    assert_eq!(out.tokens.len(), 1, "stopped within one step");
}
