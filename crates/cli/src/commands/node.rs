//! `hypertensor node`: one machine of a swarm. A hoster serves a span of
//! blocks and announces it in the DHT; a validator scores hosters; a client
//! holds the model's ends and serves the OpenAI-compatible API over the
//! swarm. With `--chain` the node follows the chain: proof of stake guards
//! its DHT and RPC, and hosters and validators run the consensus loop.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use hypertensor_model::GgufFile;
use hypertensor_node::{HostOptions, NodeBuilder, NodeOptions, Reach, SpanChoice};
use hypertensor_p2p::Multiaddr;
use hypertensor_primitives::Keypair;

use super::signal::shutdown_signal;

/// What this node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Role {
    /// Serve a span of blocks to the swarm (and validate once the chain
    /// promotes the node to Validator class).
    Hoster,
    /// Score hosters, commit and reveal, propose when elected, attest
    /// (needs --chain).
    Validator,
    /// Hold embedding and head; serve the HTTP API through the swarm.
    Client,
}

/// Arguments of `hypertensor node`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// What this node does.
    #[arg(long, value_enum)]
    pub(crate) role: Role,
    #[command(flatten)]
    pub(crate) model: crate::cli::ModelArgs,
    /// The model's name in DHT keys (default: the name of a model known by
    /// name, such as `smollm2`, else the file name without extension).
    /// Every node of a swarm must use the same name.
    #[arg(long, value_name = "NAME")]
    pub(crate) model_name: Option<String>,
    /// Hoster: serve blocks A..B (written A:B).
    #[arg(long, value_name = "A:B", conflicts_with = "num_blocks")]
    pub(crate) blocks: Option<String>,
    /// Hoster: serve this many consecutive blocks where the swarm's
    /// announced servers are weakest (default: every block). The same with
    /// or without --chain.
    #[arg(long, value_name = "N")]
    pub(crate) num_blocks: Option<usize>,
    /// Key file (from `hypertensor keygen`); without one a fresh identity is
    /// made for this run.
    #[arg(long, value_name = "FILE")]
    pub(crate) identity: Option<PathBuf>,
    /// Address to listen on (repeatable).
    #[arg(long, value_name = "MULTIADDR", default_value = "/ip4/0.0.0.0/tcp/0")]
    pub(crate) listen: Vec<Multiaddr>,
    /// Address to announce to others (repeatable; e.g. a public address).
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) announce: Vec<Multiaddr>,
    /// A peer to join through, ending in /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// The subnet whose DHT to join.
    #[arg(long, default_value_t = 1)]
    pub(crate) subnet_id: u32,
    /// Hoster: megabytes of KV cache all sessions together may hold.
    #[arg(long, default_value_t = 256)]
    pub(crate) cache_mb: usize,
    /// Client: address of the OpenAI-compatible HTTP API.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub(crate) api: SocketAddr,
    /// Client: the API's limits.
    #[command(flatten)]
    pub(crate) api_limits: crate::cli::ApiLimitArgs,
    /// Client: also serve a prompt trained by `finetune` (its file;
    /// repeatable), as the model id `<model>:<file name without
    /// extension>`.
    #[arg(long, value_name = "FILE")]
    pub(crate) prompt_tuning: Vec<std::path::PathBuf>,
    /// Client: relay every hidden state through this node instead of
    /// having each server push its output straight to the next.
    #[arg(long)]
    pub(crate) relay: bool,
    /// Client: share of sequences spot-checked, out of the user's path,
    /// by replaying one hop's inputs to another server with the same
    /// blocks (0 turns checks off).
    #[arg(long, value_name = "SHARE", default_value_t = hypertensor_inference::DEFAULT_CHECK_RATE, value_parser = parse_share)]
    pub(crate) check_rate: f64,
    /// The chain's RPC URL (e.g. ws://127.0.0.1:9944). With it, proof of
    /// stake guards the DHT and RPC and the node takes part in consensus
    /// (the identity must be registered as a node of the subnet, and is its
    /// hotkey). Without it every peer is admitted and there is no
    /// consensus.
    #[arg(long, value_name = "URL")]
    pub(crate) chain: Option<String>,
    /// Serve Prometheus `/metrics`, `/health` and `/ready` on this address
    /// (a client serves them on its API address already).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<SocketAddr>,
}

/// Starts the node and runs it until Ctrl-C or SIGTERM, or until one of
/// its critical tasks stops (an error naming the task).
pub(crate) async fn run(args: NodeArgs) -> Result<()> {
    if args.role == Role::Validator && args.chain.is_none() {
        bail!("--role validator needs --chain URL: validators score and attest on chain");
    }
    if args.role != Role::Client && !args.prompt_tuning.is_empty() {
        bail!("--prompt-tuning is served by a gateway's API: use it with --role client");
    }
    let stop = shutdown_signal();
    let path = super::model::resolve(&args.model, true)?;
    let name = args
        .model_name
        .clone()
        .unwrap_or_else(|| default_model_name(&path));
    let keypair = match &args.identity {
        Some(file) => {
            if let Ok(meta) = std::fs::metadata(file) {
                super::keygen::warn_if_exposed(file, &meta);
            }
            hypertensor_p2p::load_identity(file)
                .with_context(|| format!("cannot read the identity file {}", file.display()))?
        }
        None => {
            tracing::warn!("no --identity given: using a fresh identity for this run");
            Keypair::from_secret(rand::random())
        }
    };
    let mut options = match &args.chain {
        Some(url) => NodeOptions::new(keypair, args.subnet_id, url, path.clone()),
        None => NodeOptions::without_chain(keypair, args.subnet_id, path.clone()),
    };
    options.model_name = name.clone();
    options.listen = args.listen.clone();
    options.announce = args.announce.clone();
    options.bootstrap = args.bootstrap.clone();
    match args.role {
        Role::Hoster => {
            let n_blocks = GgufFile::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?
                .config()?
                .n_blocks;
            options.host = Some(HostOptions {
                blocks: span_choice(&args, n_blocks)?,
                cache_bytes: args.cache_mb.saturating_mul(1 << 20),
                throughput: None,
                fault: None,
            });
        }
        Role::Validator => {}
        Role::Client => {
            options.consensus = false;
            options.api = Some(args.api);
            options.api_config = args.api_limits.config();
            options.relay = args.relay;
            options.check_rate = args.check_rate;
            let config = GgufFile::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?
                .config()?;
            options.tunings = super::serve::load_tunings(&args.prompt_tuning, &config, &name)?;
        }
    }
    options.metrics_addr = args.metrics_addr;
    let node = NodeBuilder::new(options).start().await?;
    for addr in node.dial_addrs().await? {
        println!("listening on {addr}");
    }
    if let Some(server) = &node.server {
        let range = server.span().range();
        println!(
            "serving blocks {}..{} of `{name}` as {} ({:.1} steps/s, {} cache tokens)",
            range.start,
            range.end,
            node.p2p.peer_id(),
            server.throughput(),
            server.free_cache_tokens()
        );
    }
    match &node.reach {
        Some(Reach::Relayed(addr)) => println!("behind NAT: reachable through the relay at {addr}"),
        Some(Reach::Direct(addr)) => println!("reachable directly at {addr}"),
        Some(Reach::Unknown) => println!("reachability unknown: no peer could probe this node"),
        Some(Reach::Unchecked) | None => {}
    }
    if let Some(addr) = node.api_addr {
        println!("OpenAI-compatible API on http://{addr}/v1");
        println!("dashboard on http://{addr}/");
    }
    if let Some(addr) = node.metrics_addr {
        println!("metrics on http://{addr}/metrics");
    }
    if let (Some(url), true) = (&args.chain, args.role != Role::Client) {
        println!("following the chain at {url}; consensus duties run every epoch");
    }
    node.run_until(stop).await?;
    Ok(())
}

/// The model's name in DHT keys when none is given: the name of the model
/// known by name whose file this is (`smollm2` for the default model),
/// else the file name without its extension.
pub(crate) fn default_model_name(path: &std::path::Path) -> String {
    let file = path.file_name().and_then(|s| s.to_str());
    if let Some(model) = file.and_then(hypertensor_fetch::model_by_file_name) {
        return model.name.to_string();
    }
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string()
}

/// The blocks a hoster asked for: `--blocks A:B` exactly, else
/// `--num-blocks N` (default: all) where the swarm is weakest.
fn span_choice(args: &NodeArgs, n_blocks: usize) -> Result<SpanChoice> {
    Ok(match (&args.blocks, args.num_blocks) {
        (Some(text), _) => SpanChoice::Blocks(parse_blocks(text, n_blocks)?),
        (None, Some(0)) => bail!("--num-blocks must be at least 1"),
        (None, len) => SpanChoice::Weakest(len.unwrap_or(n_blocks).min(n_blocks)),
    })
}

fn parse_blocks(text: &str, n_blocks: usize) -> Result<Range<usize>> {
    let Some((a, b)) = text.split_once(':') else {
        bail!("--blocks must be written A:B, got `{text}`");
    };
    let start: usize = a
        .trim()
        .parse()
        .with_context(|| format!("--blocks: bad start `{a}`"))?;
    let end: usize = b
        .trim()
        .parse()
        .with_context(|| format!("--blocks: bad end `{b}`"))?;
    if start >= end || end > n_blocks {
        bail!("--blocks {start}:{end} does not fit the model's {n_blocks} blocks");
    }
    Ok(start..end)
}

/// A share in `[0, 1]` (the spot-check rate).
fn parse_share(text: &str) -> std::result::Result<f64, String> {
    let share: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err(format!("{share} is not a share between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_share;

    #[test]
    fn a_check_rate_is_a_share_and_anything_else_is_named() {
        assert_eq!(parse_share("0.05"), Ok(0.05));
        assert_eq!(parse_share("0"), Ok(0.0));
        assert_eq!(parse_share("1"), Ok(1.0));
        assert_eq!(
            parse_share("1.5").unwrap_err(),
            "1.5 is not a share between 0 and 1"
        );
        assert_eq!(
            parse_share("-0.1").unwrap_err(),
            "-0.1 is not a share between 0 and 1"
        );
        assert_eq!(parse_share("often").unwrap_err(), "`often` is not a number");
        assert!(parse_share("NaN").is_err(), "NaN is no share");
    }
}
