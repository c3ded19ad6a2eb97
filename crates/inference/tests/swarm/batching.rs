//! Sixteen sequences at once through real block servers: the servers run
//! their steps in shared batches, every sequence gets exactly its solo
//! greedy tokens, and a server killed mid-generation is replaced by
//! replaying each sequence's steps, still token for token.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hypertensor_model::{Flow, GenerationRequest, SamplingParams, generate};

use crate::harness::{Swarm, local_greedy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_sessions_share_batches_and_keep_their_solo_tokens_through_a_failover() {
    let swarm = Swarm::new("batch16").await;
    let first = swarm.add_server(0..10, |_| {}).await;
    let primary = swarm
        .add_server(10..20, |c| c.throughput = Some(1000.0))
        .await;
    let spare = swarm.add_server(10..20, |c| c.throughput = Some(5.0)).await;
    swarm.add_server(20..30, |_| {}).await;
    let client = swarm.client(|_| {}).await;
    let prompts: Vec<String> = (0..16)
        .map(|i| {
            let topic = ["a lighthouse", "the river", "my garden", "an old clock"][i % 4];
            format!("Note {i}. A few words about {topic}:")
        })
        .collect();
    let expected: Vec<Vec<u32>> = prompts.iter().map(|p| local_greedy(p, 16)).collect();
    let killer = primary.killer();
    let got = tokio::task::spawn_blocking(move || {
        let killed = AtomicBool::new(false);
        let pieces = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let handles: Vec<_> = prompts
                .iter()
                .map(|p| {
                    let (client, killer, killed, pieces) = (&client, &killer, &killed, &pieces);
                    scope.spawn(move || {
                        let request = GenerationRequest {
                            prompt: client.tokenizer().encode_with_bos(p, false).unwrap(),
                            max_tokens: 16,
                            sampling: SamplingParams::default(),
                            stop: vec![],
                        };
                        let mut session =
                            client.session_for(request.prompt.len() + request.max_tokens);
                        generate(&mut session, client.tokenizer(), &request, |_| {
                            // Mid-way through everyone's generation.
                            if pieces.fetch_add(1, Ordering::SeqCst) == 16 * 6
                                && !killed.swap(true, Ordering::SeqCst)
                            {
                                killer.kill();
                            }
                            Flow::Continue
                        })
                        .unwrap()
                        .tokens
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    })
    .await
    .unwrap();
    for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "sequence {i} differs from its solo tokens");
    }
    let batched = first.server.batch_stats();
    assert!(
        batched.largest_batch >= 8,
        "the first server should have run many sessions' steps together: {batched:?}"
    );
    assert!(batched.batches < batched.steps, "{batched:?}");
    let took_over = spare.server.batch_stats();
    assert!(
        took_over.steps >= 16,
        "the spare should have replayed and continued every sequence: {took_over:?}"
    );
}
