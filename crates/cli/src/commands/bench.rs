//! `hypertensor bench`: prefill and decode speed of a local model, measured
//! the way llama.cpp's `llama-bench` measures them (pp: one batch of N
//! prompt tokens from an empty context; tg: N tokens one at a time from an
//! empty context), so the two can be printed side by side.

use std::time::Instant;

use anyhow::Result;
use hypertensor_model::{LanguageModel, LocalModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cli::BenchArgs;
use crate::commands::model;

#[derive(Debug, Serialize)]
struct BenchResult {
    test: String,
    n_tokens: usize,
    threads: usize,
    tokens_per_second_mean: f64,
    tokens_per_second_stddev: f64,
    samples: Vec<f64>,
    /// The process's resident memory after the test (VmRSS), in bytes.
    resident_bytes: Option<u64>,
    /// The most the process has held resident so far (VmHWM), in bytes.
    peak_resident_bytes: Option<u64>,
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    let path = model::resolve(&args.model, false)?;
    let llm = LocalModel::load(&path)?;
    let threads = rayon_threads();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let vocab = llm.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..args.prompt_tokens)
        .map(|_| rng.random_range(0..vocab))
        .collect();

    let prefill = measure(args.repetitions, args.prompt_tokens, || {
        let mut session = llm.session();
        session.forward(&prompt).map(|_| ())
    })?;
    let prefill_memory = resident_memory();
    let decode = measure(args.repetitions, args.gen_tokens, || {
        let mut session = llm.session();
        let mut token = prompt[0];
        for _ in 0..args.gen_tokens {
            let logits = session.forward(&[token])?;
            token = hypertensor_model::sampling::argmax(&logits);
        }
        Ok(())
    })?;
    let decode_memory = resident_memory();
    let results = vec![
        result(
            format!("pp{}", args.prompt_tokens),
            args.prompt_tokens,
            threads,
            prefill,
            prefill_memory,
        ),
        result(
            format!("tg{}", args.gen_tokens),
            args.gen_tokens,
            threads,
            decode,
            decode_memory,
        ),
    ];
    println!("model: {}", path.display());
    println!("| engine      | test  | threads | tokens/s        | resident MiB | peak MiB |");
    println!("|-------------|-------|---------|-----------------|--------------|----------|");
    let mib = |bytes: Option<u64>| {
        bytes.map_or_else(
            || "-".to_string(),
            |b| format!("{:.0}", b as f64 / 1048576.0),
        )
    };
    for r in &results {
        println!(
            "| hypertensor | {:<5} | {:>7} | {:>7.1} ± {:<5.1} | {:>12} | {:>8} |",
            r.test,
            r.threads,
            r.tokens_per_second_mean,
            r.tokens_per_second_stddev,
            mib(r.resident_bytes),
            mib(r.peak_resident_bytes),
        );
    }
    if let Some(json) = &args.json {
        std::fs::write(json, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `work` once to warm up, then `repetitions` times, returning tokens/s.
fn measure(
    repetitions: usize,
    tokens: usize,
    mut work: impl FnMut() -> hypertensor_model::Result<()>,
) -> Result<Vec<f64>> {
    work()?;
    let mut samples = Vec::with_capacity(repetitions);
    for _ in 0..repetitions.max(1) {
        let start = Instant::now();
        work()?;
        samples.push(tokens as f64 / start.elapsed().as_secs_f64());
    }
    Ok(samples)
}

/// The process's resident and peak resident memory in bytes, from
/// `/proc/self/status` (None where there is no such file).
fn resident_memory() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn result(
    test: String,
    n_tokens: usize,
    threads: usize,
    samples: Vec<f64>,
    (resident_bytes, peak_resident_bytes): (Option<u64>, Option<u64>),
) -> BenchResult {
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    BenchResult {
        test,
        n_tokens,
        threads,
        tokens_per_second_mean: mean,
        tokens_per_second_stddev: var.sqrt(),
        samples,
        resident_bytes,
        peak_resident_bytes,
    }
}
