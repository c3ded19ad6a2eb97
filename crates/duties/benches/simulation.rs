//! How fast the seeded subnet simulation runs: seeds per second of the
//! honest scenario (3 validators, 4 hosters, 101 blocks of 1 s) and of the
//! churn scenario's spec, beside the real-socket devnet that covers the
//! same epochs in wall-clock time.
//!
//! `HYPERTENSOR_BENCH_SEEDS` sets the seeds per scenario (default 500).

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/sim/harness.rs"]
mod harness;

use std::time::Instant;

use harness::{BLOCK_MS, Change, Faults, Sim, Spec, newcomer, subnet};

/// Blocks each run simulates: four consensus epochs, settled.
const HEIGHTS: u64 = 101;
/// The devnet tests' block time, for the wall-clock baseline.
const DEVNET_BLOCK_MS: u64 = 400;

fn honest() -> Spec {
    Spec {
        nodes: subnet(3, 4),
        until_height: HEIGHTS,
        changes: Vec::new(),
        faults: Faults::default(),
    }
}

fn churn() -> Spec {
    let mut nodes = subnet(3, 4);
    nodes.push(newcomer("hoster-4"));
    Spec {
        nodes,
        until_height: HEIGHTS,
        changes: vec![
            (25, Change::Join("hoster-4".into())),
            (45, Change::Leave("hoster-3".into())),
        ],
        faults: Faults::default(),
    }
}

fn main() {
    let seeds: u64 = std::env::var("HYPERTENSOR_BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let devnet_s = (HEIGHTS * DEVNET_BLOCK_MS) as f64 / 1000.0;
    println!(
        "| scenario | seeds | seeds/s | simulated s per wall s | baseline: one devnet run of the same blocks |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, spec) in [("honest", honest()), ("churn", churn())] {
        let started = Instant::now();
        for seed in 0..seeds {
            std::hint::black_box(Sim::new(&spec, seed).run());
        }
        let wall = started.elapsed().as_secs_f64();
        let rate = seeds as f64 / wall;
        let simulated = (seeds * HEIGHTS * BLOCK_MS) as f64 / 1000.0;
        println!(
            "| {name} | {seeds} | {rate:.1} | {:.0} | {devnet_s:.0} s ({:.3} runs/s) |",
            simulated / wall,
            1.0 / devnet_s
        );
    }
}
