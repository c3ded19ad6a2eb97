//! `hypertensor node`: one machine of a swarm. A hoster serves a span of
//! blocks and announces it in the DHT; a validator scores hosters; a client
//! holds the model's ends and serves the OpenAI-compatible API over the
//! swarm. With `--chain` the node follows the chain: proof of stake guards
//! its DHT and RPC, and hosters and validators run the consensus loop.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use hypertensor_inference::{
    AdmitAll, BlockServer, ClientConfig, ServerConfig, SwarmBackend, SwarmClient,
    announced_servers, p2p_config, routing::weakest_span,
};
use hypertensor_model::{BlockSpan, GgufFile};
use hypertensor_node::{HostOptions, NodeOptions, start_node};
use hypertensor_p2p::{Client, Multiaddr};
use hypertensor_primitives::{H256, Keypair};

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
    /// A GGUF file of the llama family, or `default` for the default model
    /// (fetched into the per-user cache).
    #[arg(long, value_name = "PATH|default", default_value = "default")]
    pub(crate) model: String,
    /// The model's name in DHT keys (default: `smollm2` for the default
    /// model, else the file name without extension). Every node of a swarm
    /// must use the same name.
    #[arg(long, value_name = "NAME")]
    pub(crate) model_name: Option<String>,
    /// Hoster: serve blocks A..B (written A:B).
    #[arg(long, value_name = "A:B", conflicts_with = "num_blocks")]
    pub(crate) blocks: Option<String>,
    /// Hoster: serve this many blocks, where the swarm is weakest (with
    /// --chain: the first N blocks; default: every block).
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
    /// The chain's RPC URL (e.g. ws://127.0.0.1:9944). With it, proof of
    /// stake guards the DHT and RPC and the node takes part in consensus
    /// (the identity must be registered as a node of the subnet, and is its
    /// hotkey); a hoster without --blocks then serves every block.
    #[arg(long, value_name = "URL")]
    pub(crate) chain: Option<String>,
}

/// Starts the node and runs it until Ctrl-C or SIGTERM.
pub(crate) fn run(args: NodeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: NodeArgs) -> Result<()> {
    let path = if args.model == "default" {
        hypertensor_fetch::default_model_path(true).context("cannot fetch the default model")?
    } else {
        PathBuf::from(&args.model)
    };
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
    if let Some(url) = args.chain.clone() {
        return run_with_chain(&args, &path, &name, keypair, &url).await;
    }
    if args.role == Role::Validator {
        bail!("--role validator needs --chain URL: validators score and attest on chain");
    }
    let mut config = p2p_config(
        keypair,
        args.subnet_id,
        H256([0; 32]),
        &name,
        Arc::new(AdmitAll),
    );
    config.listen = args.listen.clone();
    config.announce = args.announce.clone();
    config.bootstrap = args.bootstrap.clone();
    let (p2p, events, event_loop) =
        hypertensor_p2p::new(config).context("cannot start the P2P node")?;
    let network = tokio::spawn(event_loop.run());
    let addrs = p2p.listen_addrs().await?;
    for addr in &addrs {
        println!(
            "listening on {}",
            addr.clone().with_p2p(p2p.peer_id()).unwrap_or_else(|a| a)
        );
    }
    let outcome = match args.role {
        Role::Hoster => host(&args, &path, &name, p2p, events).await,
        Role::Client => {
            drop(events);
            serve_api(&args, &path, &name, p2p).await
        }
        Role::Validator => bail!("--role validator needs --chain URL"),
    };
    network.abort();
    outcome
}

/// The model's name in DHT keys when none is given: `smollm2` for the
/// default model, else the file name without its extension.
pub(crate) fn default_model_name(path: &std::path::Path) -> String {
    let file = path.file_name().and_then(|s| s.to_str());
    if file == Some(hypertensor_fetch::DEFAULT_MODEL.file_name()) {
        return "smollm2".to_string();
    }
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string()
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

async fn host(
    args: &NodeArgs,
    path: &std::path::Path,
    name: &str,
    p2p: Client,
    events: tokio::sync::mpsc::Receiver<hypertensor_p2p::Event>,
) -> Result<()> {
    let gguf = GgufFile::open(path)?;
    let n_blocks = gguf.config()?.n_blocks;
    let range = match (&args.blocks, args.num_blocks) {
        (Some(text), _) => parse_blocks(text, n_blocks)?,
        (None, Some(0)) => bail!("--num-blocks must be at least 1"),
        (None, len) => {
            let len = len.unwrap_or(n_blocks).min(n_blocks);
            wait_for_peers(&p2p, !args.bootstrap.is_empty()).await;
            let servers = announced_servers(&p2p, name, n_blocks, 0).await?;
            let spans: Vec<_> = servers
                .iter()
                .map(|(_, i)| (i.start as usize, i.end as usize, i.throughput))
                .collect();
            weakest_span(&spans, n_blocks, len)
        }
    };
    println!(
        "loading blocks {}..{} of {}",
        range.start,
        range.end,
        path.display()
    );
    let span = BlockSpan::load(&gguf, range.clone())?;
    let mut config = ServerConfig::new(name);
    config.cache_budget_bytes = args.cache_mb.saturating_mul(1 << 20);
    let server = Arc::new(BlockServer::new(span, config)?);
    println!(
        "serving blocks {}..{} of `{name}` as {} ({:.1} steps/s, {} cache tokens)",
        range.start,
        range.end,
        p2p.peer_id(),
        server.throughput(),
        server.free_cache_tokens()
    );
    tokio::select! {
        () = server.run(p2p, events) => bail!("the P2P node stopped"),
        () = shutdown_signal() => Ok(()),
    }
}

/// Waits (a few seconds at most) until the DHT knows a peer, so the first
/// reads see the swarm.
async fn wait_for_peers(p2p: &Client, expect_peers: bool) {
    if !expect_peers {
        return;
    }
    p2p.wait_for_peers(Duration::from_secs(5)).await;
}

async fn serve_api(args: &NodeArgs, path: &std::path::Path, name: &str, p2p: Client) -> Result<()> {
    wait_for_peers(&p2p, !args.bootstrap.is_empty()).await;
    let client = SwarmClient::load(
        path,
        p2p,
        tokio::runtime::Handle::current(),
        ClientConfig::new(name),
    )?;
    let backend = Arc::new(SwarmBackend::new(name, Arc::new(client)));
    let listener = tokio::net::TcpListener::bind(args.api)
        .await
        .with_context(|| format!("cannot listen on {}", args.api))?;
    println!(
        "OpenAI-compatible API on http://{}/v1",
        listener.local_addr()?
    );
    hypertensor_api::serve(
        listener,
        backend,
        &args.api_limits.config(),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// Runs a node that follows the chain at `url` until Ctrl-C or SIGTERM.
async fn run_with_chain(
    args: &NodeArgs,
    path: &std::path::Path,
    name: &str,
    keypair: Keypair,
    url: &str,
) -> Result<()> {
    let mut options = NodeOptions::new(keypair, args.subnet_id, url, path.to_path_buf());
    options.model_name = name.to_string();
    options.listen = args.listen.clone();
    options.announce = args.announce.clone();
    options.bootstrap = args.bootstrap.clone();
    match args.role {
        Role::Hoster => {
            let n_blocks = GgufFile::open(path)?.config()?.n_blocks;
            let blocks = match &args.blocks {
                Some(text) => parse_blocks(text, n_blocks)?,
                None => match args.num_blocks {
                    Some(0) => bail!("--num-blocks must be at least 1"),
                    n => 0..n.unwrap_or(n_blocks).min(n_blocks),
                },
            };
            options.host = Some(HostOptions {
                blocks,
                cache_bytes: args.cache_mb.saturating_mul(1 << 20),
                throughput: None,
            });
        }
        Role::Validator => {}
        Role::Client => {
            options.consensus = false;
            options.api = Some(args.api);
            options.api_config = args.api_limits.config();
        }
    }
    let mut node = start_node(options).await?;
    for addr in node.dial_addrs().await? {
        println!("listening on {addr}");
    }
    if let Some(server) = &node.server {
        let range = server.span().range();
        println!(
            "serving blocks {}..{} of `{name}` ({:.1} steps/s)",
            range.start,
            range.end,
            server.throughput()
        );
    }
    if let Some(addr) = node.api_addr {
        println!("OpenAI-compatible API on http://{addr}/v1");
    }
    if args.role != Role::Client {
        println!("following the chain at {url}; consensus duties run every epoch");
    }
    shutdown_signal().await;
    node.stop().await;
    Ok(())
}

/// Completes at Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
