//! `hypertensor devnet`: the whole system on one machine, with a live
//! status of every epoch, until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hypertensor_node::devnet::{Devnet, DevnetConfig, EpochReport, EpochReporter, Role};
use hypertensor_primitives::Fixed;
use hypertensor_primitives::units::format_tensor;
use hypertensor_runtime::SettlementOutcome;

use super::node::default_model_name;
use super::signal::shutdown_signal;

/// Arguments of `hypertensor devnet`.
#[derive(Debug, Args)]
pub(crate) struct DevnetArgs {
    /// Directory of the chain database (default: a fresh temporary
    /// directory, removed at exit).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) model: crate::cli::ModelArgs,
    /// Hosters (default: 3 per block).
    #[arg(long, value_name = "N")]
    pub(crate) hosters: Option<usize>,
    /// Validators that host nothing.
    #[arg(long, value_name = "M", default_value_t = 2)]
    pub(crate) validators: usize,
    /// Blocks each hoster serves.
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub(crate) blocks_per_hoster: usize,
    /// Chain blocks per epoch (at least 20).
    #[arg(long, value_name = "L", default_value_t = 20)]
    pub(crate) epoch_length: u64,
    /// Milliseconds between chain blocks.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub(crate) block_time_ms: u64,
    /// Chain validators finalizing the chain with simplex BFT (4 tolerate
    /// one down).
    #[arg(long, value_name = "N", default_value_t = hypertensor_node::devnet::DEFAULT_CHAIN_VALIDATORS)]
    pub(crate) chain_validators: usize,
    /// Address of the OpenAI-compatible API (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    pub(crate) api_addr: SocketAddr,
    /// The API's limits.
    #[command(flatten)]
    pub(crate) api_limits: crate::cli::ApiLimitArgs,
}

/// Runs the devnet until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: DevnetArgs) -> Result<()> {
    let model_path = super::model::resolve(&args.model, true)?;
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("hypertensor-devnet-{}", std::process::id())),
            true,
        ),
    };
    let name = default_model_name(&model_path);
    let mut config = DevnetConfig::new(dir.clone(), model_path, &name);
    config.hosters = args.hosters;
    config.validators = args.validators;
    config.blocks_per_hoster = args.blocks_per_hoster;
    config.epoch_length = args.epoch_length;
    config.block_time_ms = args.block_time_ms;
    config.chain_validators = args.chain_validators;
    config.api_addr = args.api_addr;
    config.api_config = args.api_limits.config();
    let outcome = run_devnet(config).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

async fn run_devnet(config: DevnetConfig) -> Result<()> {
    let name = config.model_name.clone();
    let stop = shutdown_signal();
    println!("starting the devnet in {}", config.dir.display());
    let devnet = Devnet::start(config).await?;
    println!("chain RPC: {}", devnet.chain_url);
    for (member, node) in &devnet.nodes {
        let job = match &member.role {
            Role::Hoster(blocks) => format!("hoster of blocks {}..{}", blocks.start, blocks.end),
            Role::Validator => "validator".to_string(),
        };
        let metrics = node
            .metrics_addr
            .map(|a| format!("  metrics http://{a}/metrics"))
            .unwrap_or_default();
        println!(
            "  {:<12} {job:<26} {}{metrics}",
            member.name,
            node.p2p.peer_id()
        );
    }
    let url = format!("http://{}/v1", devnet.api_addr);
    println!("dashboard: http://{}/", devnet.api_addr);
    println!("OpenAI-compatible API: {url}");
    println!(
        "try: curl {url}/chat/completions -H 'content-type: application/json' \
         -d '{{\"model\":\"{name}\",\"messages\":[{{\"role\":\"user\",\"content\":\"What is the capital of France?\"}}],\"max_tokens\":48}}'"
    );
    println!(
        "nodes and subnet activate at the next epoch; consensus starts the epoch after. Ctrl-C stops."
    );
    let mut devnet = devnet;
    let reporter = devnet.reporter();
    let outcome = tokio::select! {
        outcome = status_loop(&reporter) => outcome,
        failure = devnet.wait_for_failure() => Err(failure.into()),
        () = stop => Ok(()),
    };
    println!("stopping the devnet");
    devnet.stop().await;
    println!("stopped");
    outcome
}

/// Prints each epoch's report once it is settled. A report that cannot be
/// read is skipped with a warning; the devnet runs on.
async fn status_loop(devnet: &EpochReporter) -> Result<()> {
    let length = devnet.chain().parameters().await?.epoch_length;
    let mut heads = devnet.chain().subscribe_new_heads().await?;
    while let Some(head) = heads.next().await {
        let height = match head {
            Ok(head) => head.header.height,
            Err(e) => {
                eprintln!("warning: bad head notification: {e}");
                continue;
            }
        };
        if height > 0 && height % length == 0 {
            match devnet.epoch_report(height / length - 1).await {
                Ok(report) => {
                    print_report(&report);
                    print_chain_status(&devnet.chain_status().await);
                }
                Err(e) => eprintln!(
                    "warning: cannot read epoch {}'s report: {e:#}",
                    height / length - 1
                ),
            }
        }
    }
    anyhow::bail!("the chain's head subscription ended")
}

/// One line on the chain validators: the finalized height, the lag
/// between what consensus finalized and what is committed, who is up.
fn print_chain_status(validators: &[Option<hypertensor_chain_client::Health>]) {
    let up: Vec<_> = validators.iter().flatten().collect();
    let finalized = up.iter().map(|h| h.finalized_tip).max().unwrap_or(0);
    let committed = up.iter().map(|h| h.height).min().unwrap_or(0);
    println!(
        "chain     | finalized #{finalized} | finality lag {} blocks | validators up {}/{}",
        finalized.saturating_sub(committed),
        up.len(),
        validators.len()
    );
}

fn percent(ratio: Fixed) -> String {
    format!("{}%", ratio.mul_floor_unit(100))
}

fn print_report(report: &EpochReport) {
    let consensus = match &report.outcome {
        None if report.elected.is_none() => "subnet not active yet".to_string(),
        None => "not settled".to_string(),
        Some(SettlementOutcome::NoProposal) => "no proposal: elected validator penalized".into(),
        Some(SettlementOutcome::BelowMinAttestation { ratio, slashed }) => format!(
            "attestation {} below 66%: elected validator slashed {} TENSOR",
            percent(*ratio),
            format_tensor(*slashed)
        ),
        Some(SettlementOutcome::HeldRewards { ratio }) => {
            format!(
                "in consensus ({}), all scores zero: rewards held",
                percent(*ratio)
            )
        }
        Some(SettlementOutcome::InConsensus { ratio, allocation }) => format!(
            "in consensus ({} attested), {} TENSOR paid",
            percent(*ratio),
            format_tensor(*allocation)
        ),
    };
    let elected = report
        .elected
        .and_then(|id| report.nodes.iter().find(|n| n.node == id))
        .map_or("-".to_string(), |n| format!("{} (node {})", n.name, n.node));
    println!(
        "epoch {:>3} | elected {elected} | {}/{} attested | {consensus} | vault {} TENSOR",
        report.epoch,
        report.attesters.len(),
        report.snapshot,
        format_tensor(report.vault)
    );
    for n in &report.nodes {
        let score = n
            .score
            .map_or("-".to_string(), |s| format!("{:.4}", s as f64 / 1e18));
        println!(
            "    {:<12} node {:>2}  {:<9} score {:>7}  reward {:>12}  balance {:>14}  penalties {}",
            n.name,
            n.node,
            format!("{:?}", n.class),
            score,
            format_tensor(n.reward),
            format_tensor(n.balance),
            n.penalties
        );
    }
}
