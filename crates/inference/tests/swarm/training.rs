//! Training requests over real libp2p sockets: a server runs its span
//! forward and backward for a client exactly as the span does locally,
//! refuses by name what is beyond its limits or not its span, and counts
//! training apart from inference.

use std::time::Duration;

use hypertensor_inference::InferenceError;
use hypertensor_inference::train::{TrainKind, TrainRequest, remote_train};
use hypertensor_model::HiddenStates;

use crate::harness::{Swarm, span};

/// A seeded stream of values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_trains_its_span_exactly_as_it_runs_locally() {
    let swarm = Swarm::new("train").await;
    let range = 0..10;
    let node = swarm
        .add_server(range.clone(), |c| c.train.max_positions = 16)
        .await;
    let client = swarm.client(|_| {}).await;
    let local = span(range.clone());
    let h = local.config().hidden_size;
    let (rows, prompt_rows) = ([6, 4], 2);
    let inputs: Vec<Vec<f32>> = rows
        .iter()
        .enumerate()
        .map(|(i, n)| values(i as u64 + 1, n * h))
        .collect();
    let prompts: Vec<Vec<f32>> = (0..range.len())
        .map(|b| {
            values(100 + b as u64, prompt_rows * h)
                .iter()
                .map(|v| v * 0.1)
                .collect()
        })
        .collect();
    let grads: Vec<Vec<f32>> = rows
        .iter()
        .enumerate()
        .map(|(i, n)| values(200 + i as u64, n * h))
        .collect();
    let request = |kind| TrainRequest {
        kind,
        model: "smollm2".into(),
        start: range.start as u32,
        end: range.end as u32,
        inputs: inputs.clone(),
        prompts: prompts.clone(),
        grad_outputs: if kind == TrainKind::Backward {
            grads.clone()
        } else {
            Vec::new()
        },
    };
    let timeout = Duration::from_secs(60);
    let p2p = client.p2p();
    let forward = remote_train(p2p, node.peer, &request(TrainKind::Forward), h, timeout)
        .await
        .unwrap();
    let backward = remote_train(p2p, node.peer, &request(TrainKind::Backward), h, timeout)
        .await
        .unwrap();

    // The same computation here, on the same blocks.
    let mut prompt_sums = vec![vec![0.0f32; prompt_rows * h]; range.len()];
    for (i, input) in inputs.iter().enumerate() {
        let (out, tape) = local
            .forward_train(&HiddenStates::new(h, input.clone()).unwrap(), &prompts)
            .unwrap();
        assert_eq!(forward[i], out.into_vec(), "sequence {i}'s output");
        let g = local
            .backward(&tape, &HiddenStates::new(h, grads[i].clone()).unwrap())
            .unwrap();
        assert_eq!(
            backward[i],
            g.input.into_vec(),
            "sequence {i}'s input gradient"
        );
        for (sum, p) in prompt_sums.iter_mut().zip(&g.prompts) {
            sum.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
    }
    assert_eq!(
        &backward[rows.len()..],
        &prompt_sums[..],
        "prompt gradients summed"
    );

    // Beyond the limits, or not this span: refused by name, nothing run.
    let mut long = request(TrainKind::Forward);
    long.inputs = vec![values(9, 17 * h)];
    let refusal = remote_train(p2p, node.peer, &long, h, timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(&refusal, InferenceError::Refused { reason, .. } if reason.contains("17 positions") && reason.contains("at most 16")),
        "{refusal}"
    );
    let mut other = request(TrainKind::Forward);
    other.start = 10;
    other.end = 20;
    let refusal = remote_train(p2p, node.peer, &other, h, timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(&refusal, InferenceError::Refused { reason, .. } if reason.contains("serves blocks 0..10, not 10..20")),
        "{refusal}"
    );

    // Counted apart from inference.
    let ([forwards, backwards, refused], trained_rows) = node.server.training_counts();
    assert_eq!((forwards, backwards, refused), (1, 1, 2));
    assert_eq!(trained_rows, 2 * 10);
    assert_eq!(node.server.batch_stats().rows, 0, "no inference ran");
}
