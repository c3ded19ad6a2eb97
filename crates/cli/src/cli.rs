//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Hypertensor: a decentralized network that serves large language models.
#[derive(Debug, Parser)]
#[command(name = "hypertensor", version, about)]
pub(crate) struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage model files.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Complete a prompt with a local model, printing only the completion.
    Generate(GenerateArgs),
    /// Chat interactively with a local model, using its chat template.
    Chat(ChatArgs),
    /// Measure prefill and decode speed of a local model.
    Bench(BenchArgs),
    /// Run a chain validator (simplex BFT with the genesis validators) or a
    /// full node, with JSON-RPC (HTTP and WebSocket); `chain genesis`
    /// writes a genesis.
    Chain(crate::commands::ChainArgs),
    /// Generate a key file (a chain account and a libp2p identity).
    Keygen(crate::commands::KeygenArgs),
    /// Sign and submit a chain call, wait for its block, print its events.
    Tx(crate::commands::TxArgs),
    /// Read chain state over JSON-RPC.
    Query(crate::commands::QueryArgs),
    /// Run a swarm node: a hoster serving blocks, or a client serving the
    /// OpenAI-compatible API through the swarm.
    Node(crate::commands::NodeArgs),
    /// Run the whole system on this machine: a chain, a subnet, hosters,
    /// validators and a gateway serving the OpenAI-compatible API, with a
    /// live status of every epoch.
    Devnet(crate::commands::DevnetArgs),
    /// Serve the OpenAI-compatible API on a local model, batching
    /// concurrent requests (no swarm, no chain).
    Serve(crate::commands::ServeArgs),
    /// Train soft prompts (prompt tuning) on prompt/completion pairs, the
    /// model frozen; the blocks run locally or on the swarm.
    Finetune(crate::commands::FinetuneArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// Download a model known by name into the per-user cache (skipped
    /// when the cached copy's hash matches) and print its path.
    Fetch {
        /// The model's name, as `model list` shows it (default: the
        /// default model, smollm2).
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// No status lines and no progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// List the models known by name, with their licences.
    List,
}

/// Where the model comes from.
#[derive(Debug, Args)]
pub(crate) struct ModelArgs {
    /// A GGUF file, or the name of a model fetched into the per-user cache
    /// when needed (`smollm2`, the default, or `gemma3-270m`; see `model
    /// list`); a file that exists wins over a name. The default model
    /// when not given.
    #[arg(long, value_name = "PATH|NAME")]
    pub(crate) model: Option<PathBuf>,
}

/// How tokens are chosen and when generation stops.
#[derive(Debug, Args)]
pub(crate) struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub(crate) temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability.
    #[arg(long, default_value_t = 0.95)]
    pub(crate) top_p: f32,
    /// Keep only the K most likely tokens (0: no limit).
    #[arg(long, default_value_t = 40)]
    pub(crate) top_k: usize,
    /// Seed of the sampler's random stream (default: from the clock).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Stop before this string (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    pub(crate) stop: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The text to complete.
    #[arg(long)]
    pub(crate) prompt: String,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) swarm: crate::commands::SwarmArgs,
    #[command(flatten)]
    pub(crate) sampling: SamplingArgs,
    /// Start the sequence with a prompt trained by `finetune` (its file).
    #[arg(long, value_name = "FILE")]
    pub(crate) prompt_tuning: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// A system message to start the conversation with.
    #[arg(long)]
    pub(crate) system: Option<String>,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) swarm: crate::commands::SwarmArgs,
    #[command(flatten)]
    pub(crate) sampling: SamplingArgs,
    /// Start every answer with a prompt trained by `finetune` (its file).
    #[arg(long, value_name = "FILE")]
    pub(crate) prompt_tuning: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Prompt tokens processed in one batch (the prefill test).
    #[arg(long, default_value_t = 128)]
    pub(crate) prompt_tokens: usize,
    /// Tokens generated one by one (the decode test).
    #[arg(long, default_value_t = 128)]
    pub(crate) gen_tokens: usize,
    /// Repetitions of each test; the table shows mean and spread.
    #[arg(long, default_value_t = 5)]
    pub(crate) repetitions: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

/// The HTTP API's limits, for commands that serve it (defaults and why:
/// `docs/inference.md`, "HTTP limits").
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiLimitArgs {
    /// Most generations running at once (`--parallel` for short); further
    /// requests wait.
    #[arg(
        long,
        visible_alias = "parallel",
        value_name = "N",
        default_value_t = 64
    )]
    pub(crate) api_max_concurrent: usize,
    /// Most requests waiting for a generation; beyond, 429.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub(crate) api_max_waiting: usize,
    /// Largest request body in bytes; beyond, 413.
    #[arg(long, value_name = "BYTES", default_value_t = 2 << 20)]
    pub(crate) api_max_body_bytes: usize,
    /// Seconds to receive a request head (and to keep an idle connection).
    #[arg(long, value_name = "S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) api_header_timeout: u64,
    /// Seconds to receive a request body; beyond, 408.
    #[arg(long, value_name = "S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) api_body_timeout: u64,
    /// Most connections open at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) api_max_connections: usize,
    /// Most connections open at once from one IP address; beyond, 429.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub(crate) api_max_connections_per_address: usize,
    /// Most tokens a chat completion generates when the request gives no
    /// `max_tokens` (a request's own may go up to the context).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) api_chat_default_max_tokens: u64,
}

impl ApiLimitArgs {
    /// The API configuration these flags describe.
    pub(crate) fn config(&self) -> hypertensor_api::ApiConfig {
        hypertensor_api::ApiConfig {
            max_concurrent: self.api_max_concurrent,
            max_waiting: self.api_max_waiting,
            max_body_bytes: self.api_max_body_bytes,
            header_timeout: std::time::Duration::from_secs(self.api_header_timeout),
            body_timeout: std::time::Duration::from_secs(self.api_body_timeout),
            max_connections: self.api_max_connections,
            max_connections_per_address: self.api_max_connections_per_address,
            chat_default_max_tokens: usize::try_from(self.api_chat_default_max_tokens)
                .unwrap_or(usize::MAX),
        }
    }
}
