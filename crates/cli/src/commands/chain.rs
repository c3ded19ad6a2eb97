//! `hypertensor chain`: run a chain node (block producer with JSON-RPC).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use hypertensor_chain::{ChainConfig, Node};
use hypertensor_runtime::GenesisConfig;

use super::query::parse_account;
use super::signal::shutdown_signal;

/// Arguments of `hypertensor chain`.
#[derive(Debug, Args)]
pub(crate) struct ChainArgs {
    /// Development chain: the dev genesis (alice, bob, ... funded) unless
    /// --genesis is given, alice as author unless --author is given, and a
    /// fresh temporary directory unless --base-path is given.
    #[arg(long)]
    pub(crate) dev: bool,
    /// Directory of the chain database (reused across restarts).
    #[arg(long, value_name = "DIR")]
    pub(crate) base_path: Option<PathBuf>,
    /// Address of the JSON-RPC server (HTTP POST and WebSocket on one port;
    /// port 0 picks a free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:9944")]
    pub(crate) rpc_addr: SocketAddr,
    /// Genesis file (JSON; see docs/chain.md).
    #[arg(long, value_name = "FILE")]
    pub(crate) genesis: Option<PathBuf>,
    /// Interval between blocks in milliseconds (default: the genesis
    /// parameter block_time_ms). With --dev and no --genesis it also sets
    /// that parameter.
    #[arg(long, value_name = "N")]
    pub(crate) block_time_ms: Option<u64>,
    /// Account credited as block author: 0x-hex account id or a dev name.
    #[arg(long, value_name = "ACCOUNT")]
    pub(crate) author: Option<String>,
    /// Sustained RPC requests per second allowed per client address.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) rpc_rate_limit: u32,
    /// Largest RPC request in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub(crate) rpc_max_request_bytes: usize,
    /// Most RPC connections (HTTP and WebSocket) open at once.
    #[arg(long, default_value_t = 1024)]
    pub(crate) rpc_max_connections: usize,
    /// Most RPC connections open at once from one IP address.
    #[arg(long, default_value_t = 64)]
    pub(crate) rpc_max_connections_per_ip: usize,
    /// Seconds after which a WebSocket connection without a subscription
    /// that sends nothing (not even a ping) is closed.
    #[arg(long, default_value_t = 120)]
    pub(crate) rpc_ws_idle_timeout_secs: u64,
    /// Most extrinsics in the transaction pool.
    #[arg(long, default_value_t = 65_536)]
    pub(crate) pool_capacity: usize,
    /// Most pending extrinsics per sender.
    #[arg(long, default_value_t = 64)]
    pub(crate) pool_max_per_sender: usize,
    /// Most extrinsics per sender waiting behind a nonce gap.
    #[arg(long, default_value_t = 16)]
    pub(crate) pool_max_future_per_sender: usize,
    /// Blocks after which an extrinsic still behind a nonce gap is dropped.
    #[arg(long, default_value_t = 64)]
    pub(crate) pool_future_lifetime_blocks: u64,
}

/// Starts the node and runs it until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ChainArgs) -> Result<()> {
    let mut genesis = match &args.genesis {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read genesis file {}", path.display()))?;
            GenesisConfig::from_json(&text)
                .with_context(|| format!("invalid genesis file {}", path.display()))?
        }
        None if args.dev => GenesisConfig::dev(),
        None => bail!("give --genesis FILE, or --dev for a development chain"),
    };
    if let (true, None, Some(ms)) = (args.dev, &args.genesis, args.block_time_ms) {
        genesis.params.block_time_ms = ms;
    }
    let base_path = match (&args.base_path, args.dev) {
        (Some(path), _) => path.clone(),
        (None, true) => {
            std::env::temp_dir().join(format!("hypertensor-dev-{}", std::process::id()))
        }
        (None, false) => bail!("give --base-path DIR for the chain database"),
    };
    let author = match (&args.author, args.dev) {
        (Some(author), _) => parse_account(author)?,
        (None, true) => parse_account("alice")?,
        (None, false) => bail!("give --author ACCOUNT (the account paid the author share)"),
    };
    let block_time_ms = args.block_time_ms.unwrap_or(genesis.params.block_time_ms);
    let mut config = ChainConfig::dev(base_path.clone(), args.rpc_addr);
    config.genesis = genesis;
    config.author = author;
    config.block_time = Some(Duration::from_millis(block_time_ms));
    config.rpc.requests_per_second = args.rpc_rate_limit;
    config.rpc.burst = args.rpc_rate_limit.saturating_mul(2);
    config.rpc.max_request_bytes = args.rpc_max_request_bytes;
    config.rpc.max_connections = args.rpc_max_connections.max(1);
    config.rpc.max_connections_per_ip = args.rpc_max_connections_per_ip.max(1);
    config.rpc.ws_idle_timeout = Duration::from_secs(args.rpc_ws_idle_timeout_secs.max(1));
    config.pool = hypertensor_chain::PoolConfig {
        capacity: args.pool_capacity.max(1),
        max_per_sender: args.pool_max_per_sender.max(1),
        max_future_per_sender: args.pool_max_future_per_sender,
        future_lifetime_blocks: args.pool_future_lifetime_blocks.max(1),
    };
    let stop = shutdown_signal();
    let node = Node::start(config).await?;
    println!("genesis:   {}", node.genesis_hash());
    println!("base path: {}", base_path.display());
    println!("block time: {block_time_ms} ms");
    println!(
        "RPC listening on http://{} (HTTP and WebSocket)",
        node.rpc_addr()
    );
    node.run_until(stop).await?;
    Ok(())
}
