//! The API driven by the official `openai` Python package against the real
//! server and the real default model (the 503 case lives in the inference
//! crate's swarm tests, which own a swarm backend).

use hypertensor_api::Backend;
use hypertensor_model::{ChatMessage, Flow, GenerationRequest, SamplingParams};
use serde_json::{Value, json};

use crate::python_env::run_openai_client;
use crate::{backend, local_greedy, start};

/// The local model's greedy chat reply: (content, prompt tokens, finish reason).
fn local_chat(question: &str, max_tokens: usize) -> Value {
    let b = backend();
    let rendered = b
        .chat_template()
        .unwrap()
        .render(&[ChatMessage::user(question)], true)
        .unwrap();
    let tokens = b.tokenizer().encode(&rendered, true).unwrap();
    let request = GenerationRequest {
        prompt: tokens.clone(),
        max_tokens,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let g = b.generate(&request, None, &mut |_| Flow::Continue).unwrap();
    json!({"question": question, "max_tokens": max_tokens, "content": g.text,
           "prompt_tokens": tokens.len(), "completion_tokens": g.tokens.len(),
           "finish_reason": g.finish_reason.as_openai_str()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_client_works_against_the_api() {
    let addr = start().await;
    let prompt = "The capital of France is";
    let max_tokens = 8;
    let (text, prompt_tokens, _) = local_greedy(prompt, max_tokens, &[]);
    let expect = json!({
        "completion": {"prompt": prompt, "max_tokens": max_tokens, "text": text,
                       "prompt_tokens": prompt_tokens},
        "chat": local_chat("What is the capital of France?", 20),
    });
    run_openai_client(vec![
        "--base-url".into(),
        format!("http://{addr}/v1"),
        "--expect".into(),
        expect.to_string(),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plainest_openai_call_works_three_times_then_a_normal_one() {
    let addr = start().await;
    run_openai_client(vec!["--plainest-url".into(), format!("http://{addr}/v1")]).await;
}
