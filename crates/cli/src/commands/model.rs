//! Finding the model: a path the user gave, or the default model, fetched
//! into the per-user cache on first use.

use std::path::PathBuf;

use anyhow::Result;
use hypertensor_model::SamplingParams;

use crate::cli::{ModelArgs, SamplingArgs};

/// `hypertensor model fetch`: prints the cached default model's path.
pub(crate) fn fetch(quiet: bool) -> Result<()> {
    let path = hypertensor_fetch::default_model_path(quiet)?;
    println!("{}", path.display());
    Ok(())
}

/// The name `--model` takes for the default model.
pub(crate) const DEFAULT_MODEL_NAME: &str = "smollm2";

/// The GGUF file to use: `--model` (a path, or a known model's name), or
/// the default model (fetched if needed).
pub(crate) fn resolve(args: &ModelArgs) -> Result<PathBuf> {
    match &args.model {
        Some(path) if !path.exists() && path.as_os_str() == DEFAULT_MODEL_NAME => {
            Ok(hypertensor_fetch::default_model_path(false)?)
        }
        Some(path) => Ok(path.clone()),
        None => Ok(hypertensor_fetch::default_model_path(false)?),
    }
}

/// Sampling parameters from the command line.
pub(crate) fn sampling(args: &SamplingArgs) -> SamplingParams {
    SamplingParams {
        temperature: args.temperature,
        top_k: (args.top_k > 0).then_some(args.top_k),
        top_p: (args.top_p < 1.0).then_some(args.top_p),
        seed: args.seed.unwrap_or_else(clock_seed),
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
