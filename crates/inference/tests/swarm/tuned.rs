//! A trained prompt served through the swarm, as a gateway serves it: its
//! API lists the prompt as `smollm2:<name>` and answers with it exactly
//! what the whole model in one process answers with it; a deep prompt,
//! which the servers would have to apply, is refused by name.

use std::sync::Arc;

use hypertensor_api::{Backend, Tunings};
use hypertensor_inference::SwarmBackend;
use hypertensor_model::tune::SoftPrompts;
use hypertensor_model::{Embedding, Flow, GgufFile, PromptTuning, generate};

use crate::harness::{self, MODEL, Swarm, local_model, model_path, request};

/// A shallow prompt whose rows are the embeddings of `text` (after BOS):
/// a prompt that visibly changes the answers without training.
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
    }
    PromptTuning::new(&soft, config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shallow_prompt_is_served_through_the_swarm_as_its_own_model() {
    let swarm = Swarm::new("tuned").await;
    swarm.add_server(0..15, |_| {}).await;
    swarm.add_server(15..30, |_| {}).await;
    let client = swarm.client(|_| {}).await;
    let question = "Q: What is the vault code?\nA:";
    let tuning = hint("Remember: the vault code is zebra.\n", false);

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
    let local_plain = answer(&mut model.session());
    eprintln!("tuned {local_tuned:?}, plain {local_plain:?}");
    assert!(local_tuned.contains("zebra"), "{local_tuned:?}");
    assert!(!local_plain.contains("zebra"), "{local_plain:?}");

    let mut tunings = Tunings::default();
    tunings.insert("vault", tuning).unwrap();
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
    for (id, expected) in [("smollm2:vault", &local_tuned), ("smollm2", &local_plain)] {
        let body = serde_json::json!({
            "model": id, "prompt": question, "max_tokens": 6, "temperature": 0,
        });
        let (status, reply) = harness::post(addr, "/v1/completions", &body.to_string()).await;
        assert_eq!(status, 200, "{reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["choices"][0]["text"], **expected, "{id}");
    }

    // A deep prompt cannot be served here, and the gateway says why.
    let mut deep = Tunings::default();
    deep.insert("deep", hint("x", true)).unwrap();
    let refused = SwarmBackend::new(MODEL, client).with_tunings(deep);
    let error = refused.err().expect("a deep prompt is refused").to_string();
    assert!(
        error.contains("prompt tuning `deep`") && error.contains("local model only"),
        "{error}"
    );
}
