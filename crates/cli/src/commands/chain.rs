//! `hypertensor chain`: run a chain validator (simplex BFT with the other
//! genesis validators, JSON-RPC), and `hypertensor chain genesis`: write
//! a genesis for a set of validators.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hypertensor_chain::{ChainConfig, Node};
use hypertensor_runtime::ChainValidator;
use hypertensor_runtime::GenesisConfig;

use super::query::parse_account;
use super::signal::shutdown_signal;

/// Arguments of `hypertensor chain`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ChainArgs {
    /// Another chain command instead of running a validator.
    #[command(subcommand)]
    pub(crate) action: Option<ChainAction>,
    /// Development chain: the dev genesis (alice, bob, ... funded; alice
    /// its one validator) unless --genesis is given, alice's key unless
    /// --validator-key is given, and a fresh temporary directory unless
    /// --base-path is given.
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
    /// This validator's key file (`hypertensor keygen`); its account must
    /// be one of the genesis validators. It signs votes and is paid the
    /// author share of the blocks it proposes.
    #[arg(long, value_name = "FILE")]
    pub(crate) validator_key: Option<PathBuf>,
    /// The P2P socket to the other validators (default: this validator's
    /// address in the genesis).
    #[arg(long, value_name = "ADDR")]
    pub(crate) p2p_addr: Option<SocketAddr>,
    /// Run a full node: no vote, follow the finalized blocks of the
    /// validators at --chain (verifying each finalization certificate
    /// against the genesis validators) and serve RPC.
    #[arg(long, requires = "chain", conflicts_with_all = ["validator_key", "p2p_addr"])]
    pub(crate) full_node: bool,
    /// The validators' RPC URLs a full node follows, comma-separated
    /// (it fails over from one to the next).
    #[arg(long, value_name = "URLS")]
    pub(crate) chain: Option<String>,
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

/// Other chain commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ChainAction {
    /// Write a genesis naming the chain validators (each `ACCOUNT@IP:PORT`:
    /// the account of its `keygen` key file and its P2P socket).
    Genesis(GenesisArgs),
}

/// Arguments of `hypertensor chain genesis`.
#[derive(Debug, Args)]
pub(crate) struct GenesisArgs {
    /// A validator, `ACCOUNT@IP:PORT` (repeat for each; the account is a
    /// 0x-hex account id or a dev name).
    #[arg(long = "validator", value_name = "ACCOUNT@IP:PORT", required = true)]
    pub(crate) validators: Vec<String>,
    /// Start from this genesis file (accounts, subnets, parameters)
    /// instead of the development genesis.
    #[arg(long, value_name = "FILE")]
    pub(crate) from: Option<PathBuf>,
    /// Block time in milliseconds (sets the parameter block_time_ms).
    #[arg(long, value_name = "N")]
    pub(crate) block_time_ms: Option<u64>,
    /// Where to write the genesis (JSON).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: PathBuf,
}

/// Parses `ACCOUNT@IP:PORT`.
fn parse_validator(text: &str) -> Result<ChainValidator> {
    let (account, address) = text
        .split_once('@')
        .with_context(|| format!("validator `{text}` is not ACCOUNT@IP:PORT"))?;
    let account = parse_account(account)?;
    address
        .parse::<SocketAddr>()
        .with_context(|| format!("validator `{text}`: `{address}` is not IP:PORT"))?;
    Ok(ChainValidator {
        account,
        address: address.to_string(),
    })
}

/// Writes a genesis for the given validators.
fn write_genesis(args: GenesisArgs) -> Result<()> {
    let mut genesis = match &args.from {
        Some(path) => read_genesis(path)?,
        None => GenesisConfig::dev(),
    };
    genesis.validators = args
        .validators
        .iter()
        .map(|v| parse_validator(v))
        .collect::<Result<_>>()?;
    if let Some(ms) = args.block_time_ms {
        genesis.params.block_time_ms = ms;
    }
    let built = genesis.build().context("the genesis is invalid")?;
    let json = serde_json::to_string_pretty(&genesis)?;
    std::fs::write(&args.output, json + "\n")
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("genesis:    {}", built.state.genesis_hash());
    println!("validators: {}", genesis.validators.len());
    println!("written to: {}", args.output.display());
    Ok(())
}

fn read_genesis(path: &std::path::Path) -> Result<GenesisConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read genesis file {}", path.display()))?;
    GenesisConfig::from_json(&text)
        .with_context(|| format!("invalid genesis file {}", path.display()))
}

/// Starts the node and runs it until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: ChainArgs) -> Result<()> {
    if let Some(ChainAction::Genesis(genesis)) = args.action {
        return write_genesis(genesis);
    }
    let mut genesis = match &args.genesis {
        Some(path) => read_genesis(path)?,
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
    let validator_key = match (&args.validator_key, args.dev || args.full_node) {
        (Some(path), _) => super::keygen::read_key_file(path)?,
        (None, true) => hypertensor_primitives::Keypair::dev("alice"),
        (None, false) => bail!(
            "give --validator-key FILE (a key of one of the genesis validators), \
             or --full-node --chain URLS to follow the validators"
        ),
    };
    let block_time_ms = args.block_time_ms.unwrap_or(genesis.params.block_time_ms);
    let mut config = ChainConfig::dev(base_path.clone(), args.rpc_addr);
    config.genesis = genesis;
    config.validator_key = validator_key;
    config.p2p_addr = args.p2p_addr;
    if args.full_node {
        config.follow = args.chain.clone();
    }
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
    println!("role: {}", node.role());
    println!(
        "RPC listening on http://{} (HTTP and WebSocket)",
        node.rpc_addr()
    );
    node.run_until(stop).await?;
    Ok(())
}
