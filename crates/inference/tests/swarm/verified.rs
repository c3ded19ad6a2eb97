//! Verified serving over real sockets and the real model: spot checks
//! catch a server that corrupts what it serves, and never accuse an honest
//! one.

use std::sync::Arc;
use std::time::Duration;

use hypertensor_inference::spot_check::Draws;
use hypertensor_inference::wire::Dtype;
use hypertensor_inference::{ClientStats, Corruption, ServingFault, SwarmClient};

use crate::PROMPTS;
use crate::harness::{Swarm, greedy_through, local_greedy};

/// Waits until the client has judged `sequences` checked sequences (each
/// passed, skipped, unresolved or convicted).
async fn checks_done(client: &Arc<SwarmClient>, sequences: u64) -> ClientStats {
    let start = tokio::time::Instant::now();
    loop {
        let stats = client.stats();
        if stats.checks + stats.checks_skipped >= sequences {
            return stats;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "checks never finished: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed of the draws in these tests.
const SEED: u64 = 16;
/// The share of sequences checked in the detection test.
const RATE: f64 = 0.3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_corrupting_what_it_serves_is_caught_and_routed_around() {
    for corruption in [
        Corruption::Noise { relative: 0.05 },
        Corruption::Quantize { bits: 4 },
    ] {
        let swarm = Swarm::new("cheat").await;
        // The cheater announces itself fastest, so every sequence takes it.
        let cheater = swarm
            .add_server(0..30, |c| {
                c.throughput = Some(1000.0);
                c.fault = Some(ServingFault {
                    corruption,
                    share: 1.0,
                    seed: 3,
                });
            })
            .await;
        for _ in 0..2 {
            swarm
                .add_server(0..30, |c| c.throughput = Some(100.0))
                .await;
        }
        let client = swarm
            .client(|c| {
                c.check_rate = RATE;
                c.check_seed = Some(SEED);
                c.session_tokens = Some(256);
            })
            .await;
        // The sequences the seeded draws pick, in order: the first one
        // checked is the one that catches the cheater.
        let mut draws = Draws::new(RATE, Some(SEED));
        let mut checked = 0;
        let mut requests = 0;
        while client.stats().convictions == 0 {
            requests += 1;
            assert!(requests <= 20, "never caught: {:?}", client.stats());
            let (_, route) = greedy_through(&client, PROMPTS[requests % 3], 6).await;
            assert_eq!(route[0].0, cheater.peer, "the cheater serves until caught");
            if draws.next_is_checked() {
                draws.hop(1);
                checked += 1;
                checks_done(&client, checked).await;
            }
        }
        // On this seed the fourth sequence is the first drawn for a check.
        assert_eq!(requests, 4, "{corruption:?}");
        let stats = client.stats();
        assert_eq!(
            (stats.checks, stats.convictions, stats.checks_unresolved),
            (1, 1, 0),
            "{corruption:?}: {stats:?}"
        );
        // Convicted, it is routed around, and the answers are right again.
        let prompt = PROMPTS[0];
        let (tokens, route) = greedy_through(&client, prompt, 8).await;
        assert_ne!(route[0].0, cheater.peer);
        assert_eq!(tokens, local_greedy(prompt, 8), "{corruption:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_servers_are_never_accused() {
    let swarm = Swarm::new("honest-checks").await;
    for span in [0..15, 0..15, 0..15, 15..30, 15..30, 15..30] {
        swarm.add_server(span, |_| {}).await;
    }
    // Every sequence checked, with both wire encodings, two clients at
    // once (so servers batch their steps with others').
    let mut sequences = 0;
    let mut stats = Vec::new();
    for dtype in [Dtype::F32, Dtype::F16] {
        let clients: Vec<_> = futures::future::join_all((0..2).map(|i| {
            swarm.client(move |c| {
                c.check_rate = 1.0;
                c.check_seed = Some(SEED + i);
                c.dtype = dtype;
                c.session_tokens = Some(256);
            })
        }))
        .await;
        let runs = clients.iter().map(|client| {
            let client = client.clone();
            async move {
                for round in 0..6 {
                    let prompt = PROMPTS[round % 3];
                    let (tokens, _) = greedy_through(&client, prompt, 6).await;
                    assert_eq!(tokens.len(), 6);
                }
                checks_done(&client, 6).await
            }
        });
        for s in futures::future::join_all(runs).await {
            sequences += 6;
            stats.push(s);
        }
    }
    let total = |f: fn(&ClientStats) -> u64| stats.iter().map(f).sum::<u64>();
    let checks = total(|s| s.checks);
    eprintln!(
        "{sequences} sequences, {checks} checked: {} agreed, {} skipped, {} unresolved, {} convictions",
        total(|s| s.checks_passed),
        total(|s| s.checks_skipped),
        total(|s| s.checks_unresolved),
        total(|s| s.convictions),
    );
    assert_eq!(checks, sequences, "every sequence was compared: {stats:?}");
    assert_eq!(
        total(|s| s.checks_passed),
        checks,
        "false positives: {stats:?}"
    );
    assert_eq!(total(|s| s.convictions), 0);
    assert_eq!(total(|s| s.checks_unresolved), 0);
}
