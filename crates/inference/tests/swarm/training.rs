//! Training over real libp2p sockets: a server runs its span forward and
//! backward for a client exactly as the span does locally, refuses by name
//! what is beyond its limits or not its span, and counts training apart
//! from inference; deep soft prompts trained through three servers learn a
//! synthetic task, with one of the servers killed halfway, and the trained
//! prompt, served through the swarm's fast path, gives the answers.

use std::time::Duration;

use hypertensor_inference::InferenceError;
use hypertensor_inference::train::{TrainKind, TrainRequest, remote_train};
use hypertensor_inference::tune::{RemoteRunner, train_step};
use hypertensor_model::tune::{Adam, Example, SoftPrompts, Tuner};
use hypertensor_model::{
    Embedding, Flow, GgufFile, Head, HiddenStates, PromptTuning, Tokenizer, generate,
};

use crate::harness::{Swarm, request, span};

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
    let weights = local.training_weights();
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
            .forward_train(
                &weights,
                &HiddenStates::new(h, input.clone()).unwrap(),
                &prompts,
            )
            .unwrap();
        assert_eq!(forward[i], out.into_vec(), "sequence {i}'s output");
        let g = local
            .backward(
                &weights,
                &tape,
                &HiddenStates::new(h, grads[i].clone()).unwrap(),
            )
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

/// The synthetic task: questions with made-up answers.
const TASK: [(&str, &str); 3] = [
    ("Q: What is the vault code?\nA:", " zebra"),
    ("Q: Who guards the gate?\nA:", " Milo"),
    ("Q: What color is the tower?\nA:", " violet"),
];

/// A question's greedy answer before training, after, and its target.
type Answers = (Vec<u32>, Vec<u32>, Vec<u32>);

/// What [`tune_through`] measured: the losses, each question's greedy
/// answers and target, the runner's failovers, and the trained prompts.
type Tuned = (Vec<f64>, Vec<Answers>, u64, SoftPrompts);

/// Trains deep soft prompts on [`TASK`] through the swarm for `steps`
/// steps (calling `after_step` after each); returns the losses and, before
/// and after training, each question's greedy answer and its target.
fn tune_through(
    client: &hypertensor_inference::SwarmClient,
    steps: usize,
    mut after_step: impl FnMut(usize, &RemoteRunner),
) -> Tuned {
    let path = crate::harness::model_path();
    let gguf = GgufFile::open(&path).unwrap();
    let config = gguf.config().unwrap();
    let tokenizer = Tokenizer::from_gguf(gguf.metadata()).unwrap();
    let embedding = Embedding::load(&gguf).unwrap();
    let head = Head::load(&gguf, Some(&embedding)).unwrap().for_training();
    let runner = RemoteRunner::new(
        client.p2p().clone(),
        client.handle().clone(),
        "smollm2",
        config.n_blocks,
        config.hidden_size,
        Duration::from_secs(60),
    );
    let mut tuner = Tuner {
        embedding: &embedding,
        head: &head,
        runner,
        hidden: config.hidden_size,
    };
    let examples: Vec<Example> = TASK
        .iter()
        .map(|(p, c)| Example::new(&tokenizer, p, c).unwrap())
        .collect();
    let mut prompts = SoftPrompts::new("smollm2", 8, config.hidden_size, config.n_blocks, true, 7);
    let eos = tokenizer.eos_id();
    let answer = |tuner: &mut Tuner<'_, RemoteRunner>, prompts: &SoftPrompts, e: &Example| {
        let want = e.completion.len() - 1;
        tuner.greedy(prompts, &e.prompt, want, eos).unwrap()
    };
    let before: Vec<Vec<u32>> = examples
        .iter()
        .map(|e| answer(&mut tuner, &prompts, e))
        .collect();
    let adam = Adam::new(0.03);
    let mut losses = Vec::new();
    for step in 0..steps {
        let loss = train_step(&mut tuner, &adam, &mut prompts, &examples, 3).unwrap();
        eprintln!("step {step}: loss {loss:.4}");
        losses.push(loss);
        after_step(step, &tuner.runner);
    }
    losses.push(tuner.step(&prompts, &examples).unwrap().loss);
    let answers = examples
        .iter()
        .zip(before)
        .map(|(e, before)| {
            let after = answer(&mut tuner, &prompts, e);
            let target = e.completion[..e.completion.len() - 1].to_vec();
            (before, after, target)
        })
        .collect();
    (losses, answers, tuner.runner.failovers(), prompts)
}

/// The loss fell at least fivefold, and every answer is the target after
/// training and was not before.
fn assert_learned(losses: &[f64], answers: &[Answers]) {
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(first / last >= 5.0, "loss {first:.3} -> {last:.3}");
    for (before, after, target) in answers {
        assert_ne!(before, target, "the untuned model already answered");
        assert_eq!(after, target, "the tuned prompt's answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_prompts_learn_through_three_servers_and_survive_one_killed() {
    let swarm = Swarm::new("tune").await;
    let mut servers = Vec::new();
    for range in [0..10, 10..20, 20..30] {
        servers.push(swarm.add_server(range, |_| {}).await);
    }
    // A second server of the middle blocks, to take over.
    let spare = swarm.add_server(10..20, |_| {}).await;
    let client = swarm.client(|_| {}).await;
    let serving = client.clone();
    let killers: Vec<_> = servers
        .iter()
        .chain(std::iter::once(&spare))
        .map(|s| (s.peer, s.killer()))
        .collect();
    let (losses, answers, failovers, prompts, killed) = tokio::task::spawn_blocking(move || {
        let mut killed = None;
        let (losses, answers, failovers, prompts) = tune_through(&client, 18, |step, runner| {
            if step == 4 {
                // Kill the middle server the route uses.
                let middle = runner.route()[1].peer;
                for (peer, killer) in &killers {
                    if *peer == middle {
                        killer.kill();
                    }
                }
                killed = Some(middle);
            }
        });
        (losses, answers, failovers, prompts, killed)
    })
    .await
    .unwrap();
    eprintln!("losses {losses:?}, killed {killed:?}, failovers {failovers}");
    assert!(failovers >= 1, "the killed server was routed around");
    assert_learned(&losses, &answers);

    // Served as an API serves it (cached sessions, the deep rows sent to
    // each server of the route), the prompt gives the answers.
    let served = tokio::task::spawn_blocking(move || {
        let tuning = PromptTuning::new(&prompts, serving.model_config()).unwrap();
        let tokenizer = serving.tokenizer();
        TASK.iter()
            .map(|(question, _)| {
                let prompt = tokenizer.encode_with_bos(question, false).unwrap();
                let mut session = serving.tuned_session_for(32, &tuning).unwrap();
                let mut req = request(&prompt, 6);
                req.stop = vec!["\n".into()];
                generate(&mut session, tokenizer, &req, |_| Flow::Continue)
                    .unwrap()
                    .text
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for ((_, target), answer) in TASK.iter().zip(&served) {
        assert_eq!(answer.trim(), target.trim(), "served through the swarm");
    }
}
