//! The API over real HTTP on an ephemeral port, backed by the real default
//! model.

mod http;
mod limits;
mod openai_python;
mod python_env;
mod surfaces;

use std::sync::{Arc, OnceLock};

use hypertensor_api::{ApiConfig, Backend, LocalBackend};
use hypertensor_model::{GenerationRequest, LocalModel, SamplingParams};
use serde_json::{Value, json};

use http::{get, post, sse_data};

const MODEL: &str = "smollm2";

fn backend() -> Arc<LocalBackend> {
    static BACKEND: OnceLock<Arc<LocalBackend>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let path = match std::env::var_os("HYPERTENSOR_MODEL") {
                Some(p) => p.into(),
                None => hypertensor_fetch::default_model_path(true).expect("default model"),
            };
            Arc::new(LocalBackend::new(
                MODEL,
                LocalModel::load(path).expect("model loads"),
            ))
        })
        .clone()
}

/// Starts the API on 127.0.0.1:0 and returns its address.
async fn start() -> std::net::SocketAddr {
    start_with(backend(), ApiConfig::default()).await
}

/// Starts the API over `backend` with `config` on 127.0.0.1:0.
async fn start_with(backend: Arc<dyn Backend>, config: ApiConfig) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        hypertensor_api::serve(listener, backend, &config, std::future::pending())
            .await
            .unwrap();
    });
    addr
}

/// The greedy completion the model itself gives, for comparison.
fn local_greedy(prompt: &str, max_tokens: usize, stop: &[&str]) -> (String, usize, usize) {
    let b = backend();
    let tokens = b.tokenizer().encode_with_bos(prompt, false).unwrap();
    let request = GenerationRequest {
        prompt: tokens.clone(),
        max_tokens,
        sampling: SamplingParams::default(),
        stop: stop.iter().map(|s| s.to_string()).collect(),
    };
    let g = b
        .generate(&request, None, &mut |_| hypertensor_model::Flow::Continue)
        .unwrap();
    (g.text, tokens.len(), g.tokens.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_the_served_model() {
    let addr = start().await;
    let (status, body) = get(addr, "/v1/models").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], MODEL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_matches_the_local_model_with_usage() {
    let addr = start().await;
    let prompt = "The capital of France is";
    let (status, body) = post(
        addr,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": prompt, "max_tokens": 8, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let (text, prompt_tokens, completion_tokens) = local_greedy(prompt, 8, &[]);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], text);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], completion_tokens);
    assert_eq!(
        v["usage"]["total_tokens"],
        prompt_tokens + completion_tokens
    );
    assert_eq!(completion_tokens, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_the_text_and_finish_with_stop() {
    let addr = start().await;
    let prompt = "1, 2, 3, 4,";
    let (full, _, _) = local_greedy(prompt, 12, &[]);
    // Stop at the first comma the model writes.
    let stop = ",";
    assert!(full.contains(stop), "{full:?}");
    let expected = &full[..full.find(stop).unwrap()];
    let (status, body) = post(
        addr,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0, "stop": [stop]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], expected);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_completion_concatenates_to_the_whole_one() {
    let addr = start().await;
    let prompt = "Once upon a time";
    let (text, prompt_tokens, completion_tokens) = local_greedy(prompt, 10, &[]);
    let (status, body) = post(
        addr,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": prompt, "max_tokens": 10, "temperature": 0,
                "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|ch| ch["text"].as_str()))
        .collect();
    assert_eq!(streamed, text);
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).map(|ch| &ch["finish_reason"]))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![&json!("length")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], prompt_tokens);
    assert_eq!(usage["completion_tokens"], completion_tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_uses_the_template_streamed_and_not() {
    let addr = start().await;
    let b = backend();
    let messages = [hypertensor_model::ChatMessage::user("What is 2+2?")];
    let rendered = b.chat_template().unwrap().render(&messages, true).unwrap();
    let tokens = b.tokenizer().encode(&rendered, true).unwrap();
    let request = GenerationRequest {
        prompt: tokens.clone(),
        max_tokens: 24,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let expected = b
        .generate(&request, None, &mut |_| hypertensor_model::Flow::Continue)
        .unwrap();
    let body = json!({"model": MODEL, "max_tokens": 24, "temperature": 0,
        "messages": [{"role": "user", "content": "What is 2+2?"}]});
    let (status, text) = post(addr, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], expected.text);
    assert_eq!(
        v["choices"][0]["finish_reason"],
        expected.finish_reason.as_openai_str()
    );
    assert_eq!(v["usage"]["prompt_tokens"], tokens.len());

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let (status, sse) = post(addr, "/v1/chat/completions", &streaming).await;
    assert_eq!(status, 200);
    let events = sse_data(&sse);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, expected.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_openai_shape_and_status() {
    let addr = start().await;
    let cases = [
        (json!({"model": "nope", "prompt": "x"}), 404, Some("model")),
        (
            json!({"model": MODEL, "prompt": "x", "logit_bias": {}}),
            400,
            Some("logit_bias"),
        ),
        (
            json!({"model": MODEL, "prompt": "x", "temperature": -1}),
            400,
            Some("temperature"),
        ),
        (json!({"model": MODEL}), 400, Some("prompt")),
    ];
    for (body, status, param) in cases {
        let (got, text) = post(addr, "/v1/completions", &body).await;
        assert_eq!(got, status, "{body} -> {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(v["error"]["type"].is_string());
        assert_eq!(v["error"]["param"].as_str(), param);
    }
    let (got, text) = http::post_raw(addr, "/v1/chat/completions", "{not json").await;
    assert_eq!(got, 400);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON"));
    // A prompt longer than the context is the caller's fault.
    let long = "word ".repeat(9000);
    let (got, text) = post(
        addr,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": long}),
    )
    .await;
    assert_eq!(got, 400, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_all_complete_correctly() {
    let addr = start().await;
    let prompts: Vec<String> = (0..16)
        .map(|i| format!("Item number {i} on the list is"))
        .collect();
    let expected: Vec<String> = prompts.iter().map(|p| local_greedy(p, 6, &[]).0).collect();
    let tasks: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let body = json!({"model": MODEL, "prompt": p, "max_tokens": 6, "temperature": 0,
                              "stream": i % 2 == 0});
            tokio::spawn(async move { post(addr, "/v1/completions", &body).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200);
        let text: String = if i % 2 == 0 {
            let events = sse_data(&body);
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
            events[..events.len() - 1]
                .iter()
                .map(|e| {
                    serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        } else {
            serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(text, expected[i], "request {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sampling_repeats() {
    let addr = start().await;
    let body = json!({"model": MODEL, "prompt": "My favourite colour is", "max_tokens": 8,
                      "temperature": 0.9, "top_p": 0.9, "seed": 42});
    let (_, a) = post(addr, "/v1/completions", &body).await;
    let (_, b) = post(addr, "/v1/completions", &body).await;
    let text = |s: &str| serde_json::from_str::<Value>(s).unwrap()["choices"][0]["text"].clone();
    assert_eq!(text(&a), text(&b));
}
