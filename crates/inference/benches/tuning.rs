//! Prompt tuning's speed: training tokens per second of one step (forward,
//! then backward with the forward recomputed), with the two parts timed
//! apart, on the blocks in this process and through three servers of ten
//! blocks each on loopback libp2p.
//!
//! `cargo bench -p hypertensor-inference --bench tuning`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{MODEL, loopback_config};
use hypertensor_inference::tune::RemoteRunner;
use hypertensor_inference::{BlockServer, ServerConfig};
use hypertensor_model::tune::{LocalRunner, SpanRunner};
use hypertensor_model::{BlockSpan, GgufFile};

/// Sequences per step and positions per sequence.
const BATCH: usize = 4;
const POSITIONS: usize = 32;
/// Deep prompt rows per block.
const PROMPT_ROWS: usize = 8;
/// Timed steps (after one untimed warm-up step).
const STEPS: usize = 3;

/// Seconds of forward and of backward per step, averaged.
fn time_steps(runner: &mut impl SpanRunner, hidden: usize, n_blocks: usize) -> (f64, f64) {
    let mut state = 1u64;
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    };
    let inputs: Vec<Vec<f32>> = (0..BATCH).map(|_| draw(POSITIONS * hidden)).collect();
    let deep: Vec<Vec<f32>> = (0..n_blocks)
        .map(|_| {
            draw(PROMPT_ROWS * hidden)
                .iter()
                .map(|v| v * 0.01)
                .collect()
        })
        .collect();
    let grads: Vec<Vec<f32>> = (0..BATCH).map(|_| draw(POSITIONS * hidden)).collect();
    let (mut forward, mut backward) = (0.0, 0.0);
    for step in 0..=STEPS {
        let t = Instant::now();
        runner.forward(&inputs, &deep).expect("forward");
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        runner.backward(&inputs, &deep, &grads).expect("backward");
        let b = t.elapsed().as_secs_f64();
        if step > 0 {
            forward += f;
            backward += b;
        }
    }
    (forward / STEPS as f64, backward / STEPS as f64)
}

fn row(label: &str, (forward, backward): (f64, f64)) {
    let tokens = (BATCH * POSITIONS) as f64;
    println!(
        "| {label} | {:.1} | {:.2} s | {:.2} s | {:.0}% |",
        tokens / (forward + backward),
        forward,
        backward,
        100.0 * backward / (forward + backward)
    );
}

fn main() {
    let path: std::path::PathBuf = std::env::var_os("HYPERTENSOR_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| hypertensor_fetch::default_model_path(true).expect("default model"));
    let gguf = GgufFile::open(&path).unwrap();
    let config = gguf.config().unwrap();
    let (h, n) = (config.hidden_size, config.n_blocks);
    println!(
        "Prompt tuning, {BATCH} sequences of {POSITIONS} positions per step, {PROMPT_ROWS} deep prompt rows per block, {n} blocks:\n"
    );
    println!(
        "| blocks run | training tokens/s | forward | backward (recomputes the forward) | backward share |"
    );
    println!("|---|---|---|---|---|");
    let mut local = LocalRunner::new(BlockSpan::load(&gguf, 0..n).unwrap());
    row("in this process", time_steps(&mut local, h, n));
    drop(local);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handle = runtime.handle().clone();
    let (client, tasks) = runtime.block_on(async {
        let (boot, _events, lp) = hypertensor_p2p::new(loopback_config("tune-boot", None)).unwrap();
        let mut tasks = vec![tokio::spawn(lp.run())];
        let boot_addr = boot.listen_addrs().await.unwrap()[0]
            .clone()
            .with_p2p(boot.peer_id())
            .unwrap();
        for (i, range) in [0..10, 10..20, 20..30].into_iter().enumerate() {
            let (p2p, events, lp) = hypertensor_p2p::new(loopback_config(
                &format!("tune-server{i}"),
                Some(&boot_addr),
            ))
            .unwrap();
            tasks.push(tokio::spawn(lp.run()));
            let mut cfg = ServerConfig::new(MODEL);
            cfg.throughput = Some(100.0);
            let server =
                Arc::new(BlockServer::new(BlockSpan::load(&gguf, range).unwrap(), cfg).unwrap());
            tasks.push(tokio::spawn(server.run(p2p, events)));
        }
        let (client, _events, lp) =
            hypertensor_p2p::new(loopback_config("tune-client", Some(&boot_addr))).unwrap();
        tasks.push(tokio::spawn(lp.run()));
        let start = Instant::now();
        while hypertensor_inference::announced_servers(&client, MODEL, n, 0)
            .await
            .map(|s| s.len())
            .unwrap_or(0)
            < 3
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "servers never announced"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (client, tasks)
    });
    let mut remote = RemoteRunner::new(client, handle, MODEL, n, h, Duration::from_secs(300));
    row(
        "three servers of 10 blocks (loopback)",
        time_steps(&mut remote, h, n),
    );
    for t in tasks {
        t.abort();
    }
    std::process::exit(0);
}
