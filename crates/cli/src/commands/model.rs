//! Finding the model: a path the user gave, or a model known by name (the
//! default one when none is given), fetched into the per-user cache on
//! first use.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hypertensor_fetch::{
    DEFAULT_MODEL_NAME, FetchAction, FetchConfig, NamedModel, fetch_model, find_model,
    known_model_names,
};
use hypertensor_model::{ModelConfig, PromptTuning, SamplingParams};

use crate::cli::{ModelArgs, SamplingArgs};

/// The prompt `finetune` trained into `file`, for the model `config`
/// named `name`: refused, naming the file, when it is for another model.
pub(crate) fn load_tuning(
    file: &std::path::Path,
    config: &ModelConfig,
    name: &str,
) -> Result<PromptTuning> {
    let tuning = PromptTuning::load(file, config)?;
    if tuning.model() != name {
        bail!(
            "{} was trained for `{}`, not `{name}`",
            file.display(),
            tuning.model()
        );
    }
    Ok(tuning)
}

/// What `--model` also accepts for the default model, as `node` and
/// `devnet` always have.
const DEFAULT_ALIAS: &str = "default";

/// `hypertensor model fetch [NAME]`: fetches the model known as `name`
/// (the default model when `None`) and prints its cached path.
pub(crate) fn fetch(name: Option<&str>, quiet: bool) -> Result<()> {
    let model = find_model(name.unwrap_or(DEFAULT_MODEL_NAME))?;
    let path = fetch_named(model, quiet)?;
    println!("{}", path.display());
    Ok(())
}

/// `hypertensor model list`: the models known by name, their sizes,
/// licences and whether they are in the cache.
pub(crate) fn list() -> Result<()> {
    let config = FetchConfig::from_env().ok();
    println!(
        "{:<12} {:>9}  {:<6}  {:<19} DESCRIPTION",
        "NAME", "SIZE", "CACHED", "LICENCE"
    );
    for model in hypertensor_fetch::MODELS {
        let size = model.artifact.size();
        // The size is enough for a listing; fetching checks the hash.
        let cached = config
            .as_ref()
            .and_then(|c| std::fs::metadata(c.path_of_model(&model.artifact)).ok())
            .is_some_and(|meta| meta.len() == size);
        println!(
            "{:<12} {:>5} MiB  {:<6}  {:<19} {}",
            model.name,
            size.div_ceil(1 << 20),
            if cached { "yes" } else { "no" },
            model.licence,
            model.description
        );
    }
    Ok(())
}

/// The GGUF file to use: `--model` when it names an existing file, else
/// the model it names (`default` too), else the default model; named
/// models are fetched if needed, with status lines unless `quiet`. The one
/// place every command that takes `--model` resolves it.
pub(crate) fn resolve(args: &ModelArgs, quiet: bool) -> Result<PathBuf> {
    let name = match &args.model {
        None => DEFAULT_MODEL_NAME,
        Some(path) if path.exists() => return Ok(path.clone()),
        Some(path) => match path.to_str() {
            Some(DEFAULT_ALIAS) => DEFAULT_MODEL_NAME,
            Some(name) if find_model(name).is_ok() => name,
            _ => bail!(
                "--model {}: no such file, and no model is known by that name \
                 (the models known by name are: {})",
                path.display(),
                known_model_names()
            ),
        },
    };
    fetch_named(find_model(name)?, quiet)
}

/// Fetches `model` into the cache configured by the environment; after a
/// download, says which licence it carries (unless `quiet`).
fn fetch_named(model: &NamedModel, quiet: bool) -> Result<PathBuf> {
    let config = FetchConfig::from_env()?.with_quiet(quiet);
    let fetched = fetch_model(&config, &model.artifact)
        .with_context(|| format!("cannot fetch the model {}", model.name))?;
    if !quiet && fetched.action != FetchAction::AlreadyCached {
        eprintln!(
            "hypertensor: {} is {}; licence: {} ({})",
            model.name, model.description, model.licence, model.licence_url
        );
    }
    Ok(fetched.path)
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
