//! Two swarms serving two models at once, each through its own DHT keys:
//! Gemma 3 270M (K-quants, sliding-window layers) and the default model.
//! A test binary of its own, so its model work never competes with the
//! timing of the swarm tests.

#[allow(dead_code)]
#[path = "swarm/harness.rs"]
mod harness;

use hypertensor_model::{Flow, generate};

use harness::{Swarm, local_greedy, request};

const PROMPT: &str = "The capital of France is";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subnets_serve_two_models_each_with_its_own_local_tokens() {
    use harness::TestModel;
    // Gemma 3 (K-quants, sliding-window layers) in three spans, split
    // between local and global layers, beside the default model in two.
    let gemma = Swarm::serving("two-gemma", TestModel::gemma()).await;
    for span in [0..6, 6..11, 11..18] {
        gemma.add_server(span, |_| {}).await;
    }
    let smol = Swarm::new("two-smol").await;
    for span in [0..15, 15..30] {
        smol.add_server(span, |_| {}).await;
    }
    let gemma_client = gemma.client(|_| {}).await;
    let smol_client = smol.client(|_| {}).await;
    let gemma_local = hypertensor_model::LocalModel::load(TestModel::gemma().path).unwrap();
    let outcome = tokio::task::spawn_blocking(move || {
        let run = |client: &hypertensor_inference::SwarmClient,
                   tokenizer: &hypertensor_model::Tokenizer,
                   local: Option<&hypertensor_model::LocalModel>| {
            let prompt = tokenizer.encode_with_bos(PROMPT, false).unwrap();
            // Reserve what the generation needs (Gemma's context is 32k).
            let mut session = client.session_for(prompt.len() + 10);
            let swarm = generate(&mut session, tokenizer, &request(&prompt, 10), |_| {
                Flow::Continue
            })
            .unwrap()
            .tokens;
            let local = local.map(|model| {
                let mut session = model.session();
                generate(&mut session, tokenizer, &request(&prompt, 10), |_| {
                    Flow::Continue
                })
                .unwrap()
                .tokens
            });
            (swarm, local, session.route())
        };
        let gemma = run(&gemma_client, gemma_client.tokenizer(), Some(&gemma_local));
        let smol = run(&smol_client, smol_client.tokenizer(), None);
        (gemma, smol)
    })
    .await
    .unwrap();
    let ((gemma_swarm, gemma_local, gemma_route), (smol_swarm, _, smol_route)) = outcome;
    assert_eq!(Some(gemma_swarm), gemma_local, "Gemma through its swarm");
    assert_eq!(
        smol_swarm,
        local_greedy(PROMPT, 10),
        "SmolLM2 through its swarm"
    );
    let spans = |route: &[(hypertensor_p2p::PeerId, std::ops::Range<usize>)]| {
        route.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>()
    };
    assert_eq!(spans(&gemma_route), vec![0..6, 6..11, 11..18]);
    assert_eq!(spans(&smol_route), vec![0..15, 15..30]);
}
