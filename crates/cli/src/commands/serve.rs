//! `hypertensor serve`: the OpenAI-compatible API on a local model, its
//! concurrent requests decoded in shared batches (what `llama-server` is
//! to llama.cpp), for whoever wants the API without a swarm.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use hypertensor_api::{BatchedBackend, Surfaces, Tunings};
use hypertensor_inference::metrics::BatchCollector;
use hypertensor_model::{BatchConfig, LocalModel};

use crate::cli::{ApiLimitArgs, ModelArgs};
use crate::commands::model;
use crate::commands::node::default_model_name;
use crate::commands::signal::shutdown_signal;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) addr: SocketAddr,
    /// Megabytes of key/value cache all generations together may hold; a
    /// request finding no room for its prompt is answered 503 at once.
    #[arg(long, value_name = "MB", default_value_t = 4096)]
    pub(crate) cache_mb: usize,
    /// Most rows (tokens) in one batched forward pass.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_batch_tokens: u64,
    /// Most prompt tokens one request adds to a batch: longer prompts run a
    /// chunk per batch beside the others' decoding.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) chunk_tokens: u64,
    /// The API's limits (`--parallel N` is how many generations run at
    /// once).
    #[command(flatten)]
    pub(crate) api_limits: ApiLimitArgs,
    /// Also serve a prompt trained by `finetune` (its file; repeatable),
    /// as the model id `<model>:<file name without extension>`.
    #[arg(long, value_name = "FILE")]
    pub(crate) prompt_tuning: Vec<PathBuf>,
}

/// The prompts in `files`, for the model `config` named `model`, each
/// named after its file.
pub(crate) fn load_tunings(
    files: &[PathBuf],
    config: &hypertensor_model::ModelConfig,
    model: &str,
) -> Result<Tunings> {
    let mut tunings = Tunings::default();
    for file in files {
        let tuning = model::load_tuning(file, config, model)?;
        let name = tuning_name(file);
        tunings
            .insert(&name, tuning)
            .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    }
    Ok(tunings)
}

/// The name a prompt file is served under: its name without extension.
fn tuning_name(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) async fn run(args: ServeArgs) -> Result<()> {
    let path = model::resolve(&args.model, false)?;
    let name = default_model_name(&path);
    let batch = BatchConfig {
        max_batch_tokens: args.max_batch_tokens as usize,
        chunk_tokens: args.chunk_tokens as usize,
        ..BatchConfig::default()
    };
    let load_path = path.clone();
    let model = tokio::task::spawn_blocking(move || LocalModel::load(&load_path))
        .await
        .context("loading the model stopped")?
        .with_context(|| format!("cannot load {}", path.display()))?;
    let tunings = load_tunings(&args.prompt_tuning, model.config(), &name)?;
    let served: Vec<String> = tunings.names().map(|t| format!("{name}:{t}")).collect();
    let backend = Arc::new(
        BatchedBackend::new(
            &name,
            model.batched(batch),
            args.cache_mb.saturating_mul(1 << 20),
        )
        .with_tunings(tunings),
    );
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let config = args.api_limits.config();
    println!(
        "serving `{name}` ({}) on http://{addr}/v1 (dashboard on http://{addr}/): {} generations at once, {} cache tokens",
        path.display(),
        config.max_concurrent,
        backend.free_cache_tokens()
    );
    if !served.is_empty() {
        println!("trained prompts served as: {}", served.join(", "));
    }
    // The batches' sizes and tokens, named as a block server's.
    let surfaces = Surfaces::default();
    let batched = Arc::downgrade(&backend);
    surfaces.metrics.register(|r| {
        r.sub_registry_with_prefix("inference")
            .register_collector(Box::new(BatchCollector::new(move || {
                batched.upgrade().map(|b| b.model().batcher().stats())
            })))
    });
    hypertensor_api::serve_with(listener, backend, &config, surfaces, shutdown_signal()).await?;
    Ok(())
}
