//! Servers that answer hidden states that cannot be right (NaN, the wrong
//! length) mid-generation: they are banned and routed around like dead
//! ones, convicted by their own signed answer, the generation goes on with exactly the tokens of the local
//! model, and when no one is left to take over, the API says 503 in
//! OpenAI's shape. Over real sockets, the real P2P layer and the real
//! model.

use std::sync::atomic::Ordering;

use hypertensor_inference::InferenceError;
use hypertensor_model::{Flow, ModelError, generate};
use serde_json::Value;

use crate::harness::{
    self, Corruption, MODEL, Swarm, greedy_through, local_greedy, request, serve_api,
};

/// Steps the corrupting server runs honestly: the prompt and two tokens.
const HONEST_STEPS: usize = 3;

/// A generation whose second half of the model is first routed through a
/// server that turns bad after [`HONEST_STEPS`], with an honest spare of
/// the same span: the tokens are the local model's, the bad server is
/// banned and the spare carries the rest.
async fn corrupt_mid_generation_then_fail_over(name: &str, corruption: Corruption) {
    const TOKENS: usize = 12;
    let prompt_text = "Once upon a time, in a small village,";
    let swarm = Swarm::new(name).await;
    swarm.add_server(0..15, |_| {}).await;
    // Announced as slow, so the route takes the corrupting server first.
    let spare = swarm.add_server(15..30, |c| c.throughput = Some(5.0)).await;
    let bad = swarm
        .add_corrupting_server(15..30, HONEST_STEPS, corruption)
        .await;
    let client = swarm.client(|_| {}).await;
    let expected = local_greedy(prompt_text, TOKENS);
    let (tokens, route) = greedy_through(&client, prompt_text, TOKENS).await;
    let stats = client.stats();
    assert!(
        bad.steps.load(Ordering::SeqCst) > HONEST_STEPS,
        "the corrupting server was routed through and answered badly at least once"
    );
    assert_eq!(tokens, expected, "{corruption:?}: the local greedy tokens");
    assert_eq!(route[1].0, spare.peer, "the spare took over blocks 15..30");
    assert_eq!(stats.bans, 1, "{stats:?}");
    assert!(
        client.strikes(&bad.peer) >= 1,
        "the bad server holds a strike"
    );
    assert_eq!(client.strikes(&spare.peer), 0, "the spare holds none");
    // Its signed answer convicts it on its own (no witness needed): it is
    // never routed to again, and the spare is not accused.
    let start = tokio::time::Instant::now();
    while client.stats().convictions == 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{corruption:?}: never convicted: {:?}",
            client.stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(client.stats().convictions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_nan_mid_generation_is_banned_and_the_tokens_stay_the_local_ones() {
    corrupt_mid_generation_then_fail_over("nan", Corruption::Nan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_a_row_short_is_banned_and_the_tokens_stay_the_local_ones() {
    corrupt_mid_generation_then_fail_over("short", Corruption::ShortRow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_failure_mid_generation_is_a_503_in_openai_shape_not_a_400() {
    // The only server of blocks 15..30 answers NaN from its fourth step on:
    // once it is banned, no route is left for the rest of the generation.
    let swarm = Swarm::new("nan503").await;
    swarm.add_server(0..15, |_| {}).await;
    let bad = swarm
        .add_corrupting_server(15..30, HONEST_STEPS, Corruption::Nan)
        .await;
    let client = swarm.client(|_| {}).await;
    let addr = serve_api(client.clone()).await;
    let (status, body) = harness::post(
        addr,
        "/v1/completions",
        &serde_json::json!({
            "model": MODEL,
            "prompt": "The capital of France is",
            "max_tokens": 8,
            "temperature": 0,
        })
        .to_string(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let error = &v["error"];
    assert_eq!(error["type"], "service_unavailable", "{v}");
    assert_eq!(error["code"], "no_route", "{v}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("no route covers blocks 15..30"),
        "{message}"
    );
    assert!(bad.steps.load(Ordering::SeqCst) > HONEST_STEPS);
    assert_eq!(client.stats().bans, 1, "{:?}", client.stats());
    assert!(client.strikes(&bad.peer) >= 1);

    // Through the generation loop itself, the failure keeps its type: the
    // swarm's own error inside `ModelError::Unavailable`.
    let c = client.clone();
    let err = tokio::task::spawn_blocking(move || {
        let prompt = c.tokenizer().encode_with_bos("Hello", false).unwrap();
        let mut session = c.session();
        generate(&mut session, c.tokenizer(), &request(&prompt, 4), |_| {
            Flow::Continue
        })
        .unwrap_err()
    })
    .await
    .unwrap();
    match &err {
        ModelError::Unavailable(source) => assert!(
            matches!(
                source.downcast_ref::<InferenceError>(),
                Some(InferenceError::NoRoute { .. })
            ),
            "{source:?}"
        ),
        other => panic!("expected the swarm to be unavailable, got {other:?}"),
    }
}

/// A server that answers its own steps honestly but never pushes its
/// output on: each sequence through it waits out the push grace once and
/// relays the rest itself. Nobody is banned (the client cannot tell
/// whether that server or the next one is at fault), and the tokens are
/// the local model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_pushes_costs_one_grace_period_and_no_ban() {
    const TOKENS: usize = 8;
    let prompt_text = "The capital of France is";
    let swarm = Swarm::new("nopush").await;
    // Honest for every step, but it ignores forwarding lists.
    let silent = swarm
        .add_corrupting_server(0..15, usize::MAX, Corruption::Nan)
        .await;
    let next = swarm.add_server(15..30, |_| {}).await;
    let client = swarm.client(|_| {}).await;
    let expected = local_greedy(prompt_text, TOKENS);
    let started = std::time::Instant::now();
    let (tokens, route) = greedy_through(&client, prompt_text, TOKENS).await;
    let took = started.elapsed();
    assert_eq!(tokens, expected, "the local greedy tokens");
    assert_eq!(route[0].0, silent.peer);
    assert_eq!(route[1].0, next.peer);
    let stats = client.stats();
    assert_eq!(stats.bans, 0, "{stats:?}");
    // Only the first step waited out the grace (2 s and a little per row);
    // the rest were relayed at once.
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
    assert_eq!(next.server.pushed_steps(), 0);
}
