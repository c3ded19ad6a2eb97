//! Trained prompts served through the swarm, as a gateway serves them:
//! its API lists each as `smollm2:<name>` and answers with it exactly what
//! the whole model in one process answers with it, for a shallow prompt
//! (rows put before the tokens by the client) and a deep one (rows the
//! servers add in every block).

use std::sync::Arc;

use hypertensor_api::{Backend, Tunings};
use hypertensor_inference::SwarmBackend;
use hypertensor_model::tune::SoftPrompts;
use hypertensor_model::{Embedding, Flow, GgufFile, PromptTuning, generate};

use crate::harness::{self, MODEL, Swarm, local_model, model_path, request};

/// A prompt whose rows are the embeddings of `text` (after BOS): a prompt
/// that visibly changes the answers without training. Deep, the first
/// block's rows cancel them (the blocks see zero rows there) and the
/// others' are zero, so the text's effect is gone.
fn hint(text: &str, deep: bool) -> PromptTuning {
    let model = local_model();
    let tokens = model.tokenizer().encode_with_bos(text, false).unwrap();
    let embedding = Embedding::load(&GgufFile::open(model_path()).unwrap()).unwrap();
    let rows = embedding.forward(&tokens).unwrap().into_vec();
    let config = model.config();
    let mut soft = SoftPrompts::new(MODEL, tokens.len(), config.hidden_size, 0, false, 1);
    soft.shallow = rows;
    if deep {
        soft.deep = vec![vec![0.0; soft.shallow.len()]; config.n_blocks];
        soft.deep[0] = soft.shallow.iter().map(|v| -v).collect();
    }
    PromptTuning::new(&soft, config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trained_prompts_are_served_through_the_swarm_as_their_own_models() {
    let swarm = Swarm::new("tuned").await;
    swarm.add_server(0..15, |_| {}).await;
    swarm.add_server(15..30, |_| {}).await;
    let client = swarm.client(|_| {}).await;
    let question = "Q: What is the vault code?\nA:";
    let tuning = hint("Remember: the vault code is zebra.\n", false);
    let deep = hint("Remember: the vault code is zebra.\n", true);

    // What the whole model in this process answers, with and without.
    let model = local_model();
    let prompt = model.tokenizer().encode_with_bos(question, false).unwrap();
    let answer = |session: &mut dyn hypertensor_model::LanguageModel| {
        generate(session, model.tokenizer(), &request(&prompt, 6), |_| {
            Flow::Continue
        })
        .unwrap()
        .text
    };
    let local_tuned = answer(&mut model.tuned_session(&tuning).unwrap());
    let local_deep = answer(&mut model.tuned_session(&deep).unwrap());
    let local_plain = answer(&mut model.session());
    eprintln!("tuned {local_tuned:?}, deep {local_deep:?}, plain {local_plain:?}");
    assert_ne!(local_deep, local_tuned, "the deep rows change the answer");
    assert!(local_tuned.contains("zebra"), "{local_tuned:?}");
    assert!(!local_plain.contains("zebra"), "{local_plain:?}");

    let mut tunings = Tunings::default();
    tunings.insert("vault", tuning).unwrap();
    tunings.insert("deep", deep).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(
        SwarmBackend::new(MODEL, client.clone())
            .with_tunings(tunings)
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let config = hypertensor_api::ApiConfig::default();
        hypertensor_api::serve(listener, backend, &config, std::future::pending()).await
    });
    let (status, models) = harness::get(addr, "/v1/models").await;
    assert_eq!(status, 200, "{models}");
    assert!(models.contains("\"smollm2:vault\""), "{models}");
    assert!(models.contains("\"smollm2:deep\""), "{models}");
    for (id, expected) in [
        ("smollm2:vault", &local_tuned),
        ("smollm2:deep", &local_deep),
        ("smollm2", &local_plain),
    ] {
        let body = serde_json::json!({
            "model": id, "prompt": question, "max_tokens": 6, "temperature": 0,
        });
        let (status, reply) = harness::post(addr, "/v1/completions", &body.to_string()).await;
        assert_eq!(status, 200, "{reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["choices"][0]["text"], **expected, "{id}");
    }

    // Deep rows too many for a session's opening are refused up front,
    // by name, rather than sent for the servers to drop.
    let config = model.config();
    let soft = SoftPrompts::new(MODEL, 256, config.hidden_size, config.n_blocks, true, 3);
    let mut big = Tunings::default();
    big.insert("big", PromptTuning::new(&soft, config).unwrap())
        .unwrap();
    let error = SwarmBackend::new(MODEL, client)
        .with_tunings(big)
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("prompt tuning `big`") && error.contains("opening carries at most"),
        "{error}"
    );
}
