//! Verified serving over real sockets and the real model: spot checks
//! catch a server that corrupts what it serves, and never accuse an honest
//! one.

use std::sync::Arc;
use std::time::Duration;

use hypertensor_consensus::evidence::{MAX_ROW_DEVIATION, rows_disagree};
use hypertensor_model::{BlockSpan, Embedding, GgufFile, HiddenStates, Precision};
use rand::SeedableRng;

use hypertensor_inference::spot_check::Draws;
use hypertensor_inference::wire::Dtype;
use hypertensor_inference::{ClientStats, Corruption, ServingFault, SwarmClient};

use crate::PROMPTS;
use crate::harness::{Swarm, greedy_through, local_greedy, local_model, model_path};

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
                    pushed_only: false,
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

/// The largest relative deviation between rows of `a` and `b`.
fn deviation(a: &[f32], b: &[f32], width: usize) -> f64 {
    a.chunks(width)
        .zip(b.chunks(width))
        .map(|(x, y)| {
            let d: f64 = x.iter().zip(y).map(|(p, q)| f64::from(p - q).powi(2)).sum();
            let n = |v: &[f32]| v.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
            d.sqrt() / n(x).max(n(y))
        })
        .fold(0.0, f64::max)
}

#[test]
fn the_tolerance_separates_rounding_from_cheating() {
    // A prompt's embeddings through blocks 0..10, as the engine serves it.
    let gguf = GgufFile::open(model_path()).unwrap();
    let tokens = local_model()
        .tokenizer()
        .encode_with_bos(PROMPTS[2], false)
        .unwrap();
    let input = Embedding::load(&gguf).unwrap().forward(&tokens).unwrap();
    let width = input.width();
    let run = |span: &BlockSpan| {
        let mut hidden = HiddenStates::new(width, input.clone().into_vec()).unwrap();
        span.forward(&mut hidden, &mut span.new_cache()).unwrap();
        hidden.into_vec()
    };
    let served = run(&BlockSpan::load(&gguf, 0..10).unwrap());
    let again = run(&BlockSpan::load(&gguf, 0..10).unwrap());
    let exact = run(&BlockSpan::load_with_precision(&gguf, 0..10, Precision::F32).unwrap());
    let f16: Vec<f32> = served
        .iter()
        .map(|v| half::f16::from_f32(*v).to_f32())
        .collect();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let corrupt = |corruption: Corruption, rng: &mut rand_chacha::ChaCha20Rng| {
        let mut out = served.clone();
        corruption.apply(&mut out, width, rng);
        out
    };
    let noisy = corrupt(Corruption::Noise { relative: 0.05 }, &mut rng);
    let coarse = corrupt(Corruption::Quantize { bits: 4 }, &mut rng);
    let table = [
        ("the same engine again", deviation(&served, &again, width)),
        ("sent as f16", deviation(&served, &f16, width)),
        (
            "exact f32 products (Precision::F32)",
            deviation(&served, &exact, width),
        ),
        ("noise of 5% RMS", deviation(&served, &noisy, width)),
        (
            "rounded to 4-bit blocks",
            deviation(&served, &coarse, width),
        ),
    ];
    for (what, d) in table {
        eprintln!("{what}: largest row deviation {d:.2e} (tolerance {MAX_ROW_DEVIATION})");
    }
    assert_eq!(table[0].1, 0.0, "the engine is deterministic");
    assert!(
        table[1].1 < MAX_ROW_DEVIATION / 10.0,
        "f16 rounding is far inside"
    );
    // The engine's other precision mode is another computation, as far
    // from the served one as the 5% noise: the network serves one mode.
    for (what, d) in &table[2..] {
        assert!(*d > 2.0 * MAX_ROW_DEVIATION, "{what} is far outside: {d}");
    }
    let row = |v: &[f32]| v[..width].to_vec();
    assert!(!rows_disagree(&row(&served), &row(&f16)));
    assert!(rows_disagree(&row(&served), &row(&noisy)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_pushing_other_rows_than_it_answers_does_not_change_the_tokens() {
    let swarm = Swarm::new("push-cheat").await;
    // The first hop of every route answers the client honestly but
    // pushes noisy rows on to the second hop.
    swarm
        .add_server(0..15, |c| {
            c.throughput = Some(1000.0);
            c.fault = Some(ServingFault {
                corruption: Corruption::Noise { relative: 0.05 },
                share: 1.0,
                seed: 4,
                pushed_only: true,
            });
        })
        .await;
    let second = swarm.add_server(15..30, |_| {}).await;
    let client = swarm
        .client(|c| {
            c.check_rate = 0.0;
            c.session_tokens = Some(256);
        })
        .await;
    for prompt in PROMPTS {
        let (tokens, route) = greedy_through(&client, prompt, 8).await;
        assert_eq!(route[1].0, second.peer);
        // The second hop says it computed on other rows than the first
        // answered: the client relays the step itself, so the tokens are
        // the local model's.
        assert_eq!(tokens, local_greedy(prompt, 8), "{prompt:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_request_is_not_slower_for_its_user() {
    let swarm = Swarm::new("check-latency").await;
    swarm
        .add_server(0..30, |c| c.throughput = Some(1000.0))
        .await;
    // The only other server of these blocks, so every check replays to
    // it; it never answers, so a check waits out its 30 s opening timeout.
    let checker = swarm.add_stalling_server(0..30).await;
    let client = swarm
        .client(|c| {
            c.check_rate = 1.0;
            c.session_tokens = Some(256);
        })
        .await;
    let prompt = PROMPTS[1];
    let started = std::time::Instant::now();
    let (tokens, route) = greedy_through(&client, prompt, 8).await;
    let took = started.elapsed();
    assert_ne!(route[0].0, checker);
    assert_eq!(tokens, local_greedy(prompt, 8));
    // The user has the answer while the check is still waiting on its
    // replay: checks run after the sequence, never on its path.
    let stats = client.stats();
    assert_eq!(stats.checks_started, 1, "{stats:?}");
    assert_eq!(stats.checks + stats.checks_skipped, 0, "{stats:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
