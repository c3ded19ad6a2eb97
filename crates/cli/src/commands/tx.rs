//! `hypertensor tx ...`: sign a call, submit it, wait for its block and
//! print its events. Amounts are in TENSOR (`100`, `0.5`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hypertensor_chain_client::Inclusion;
use hypertensor_primitives::{
    Balance, DEV_ACCOUNT_NAMES, Keypair, PeerId, format_tensor, parse_tensor,
};
use hypertensor_runtime::{Call, Epoch, Event, Extrinsic, NodeId, SubnetId};

use super::keygen::read_key_file;
use super::query::{DEFAULT_RPC, connect, parse_account};

/// Arguments of `hypertensor tx`.
#[derive(Debug, Args)]
pub(crate) struct TxArgs {
    /// Chain node RPC URL (ws:// or http://, same port).
    #[arg(long, default_value = DEFAULT_RPC)]
    pub(crate) rpc: String,
    /// Key file of the signer (from `hypertensor keygen`).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "dev",
        required_unless_present = "dev"
    )]
    pub(crate) key: Option<PathBuf>,
    /// Sign with a development account (alice, bob, ...): dev chains only.
    #[arg(long, value_name = "NAME")]
    pub(crate) dev: Option<String>,
    /// Submit and return without waiting for inclusion.
    #[arg(long)]
    pub(crate) no_wait: bool,
    /// Seconds to wait for inclusion.
    #[arg(long, default_value_t = 60)]
    pub(crate) timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) call: TxCommand,
}

/// The call to make.
#[derive(Debug, Subcommand)]
pub(crate) enum TxCommand {
    /// Send TENSOR to an account.
    Transfer {
        /// Recipient (0x-hex or dev name).
        #[arg(long)]
        to: String,
        /// Amount in TENSOR.
        #[arg(long)]
        amount: String,
    },
    /// Register a subnet (pays the registration fee to the treasury).
    RegisterSubnet {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Model repository or file hash.
        #[arg(long)]
        model: String,
        /// Least stake per node, TENSOR.
        #[arg(long)]
        min_stake: String,
        /// Most stake per node, TENSOR.
        #[arg(long)]
        max_stake: String,
        /// Peer id whose node starts as Validator (repeatable, up to 3).
        #[arg(long = "initial-validator", value_name = "PEER_ID")]
        initial_validators: Vec<String>,
    },
    /// Activate your subnet (needs enough activated nodes).
    ActivateSubnet {
        /// Subnet id.
        #[arg(long)]
        subnet: SubnetId,
    },
    /// Register a node, bonding stake from your free balance.
    RegisterNode {
        /// Subnet id.
        #[arg(long)]
        subnet: SubnetId,
        /// Hotkey account (0x-hex or dev name).
        #[arg(long)]
        hotkey: String,
        /// The node's peer id.
        #[arg(long)]
        peer_id: String,
        /// Optional client peer id.
        #[arg(long)]
        client_peer_id: Option<String>,
        /// Stake in TENSOR.
        #[arg(long)]
        stake: String,
    },
    /// Activate a registered node (owner or hotkey).
    ActivateNode {
        /// Subnet id.
        #[arg(long)]
        subnet: SubnetId,
        /// Node id.
        #[arg(long)]
        node: NodeId,
    },
    /// Bond more stake to your node.
    AddStake {
        /// Subnet id.
        #[arg(long)]
        subnet: SubnetId,
        /// Node id.
        #[arg(long)]
        node: NodeId,
        /// Amount in TENSOR.
        #[arg(long)]
        amount: String,
    },
    /// Move stake of your node into unbonding.
    RemoveStake {
        /// Subnet id.
        #[arg(long)]
        subnet: SubnetId,
        /// Node id.
        #[arg(long)]
        node: NodeId,
        /// Amount in TENSOR.
        #[arg(long)]
        amount: String,
    },
    /// Remove your node; its stake goes into unbonding.
    RemoveNode {
        /// Subnet id.
        #[arg(long)]
        subnet: SubnetId,
        /// Node id.
        #[arg(long)]
        node: NodeId,
    },
    /// Move matured unbonding entries to your free balance.
    ClaimUnbonded,
    /// Propose the epoch's scores (elected validator's hotkey).
    Propose {
        /// Subnet id.
        #[arg(long)]
        subnet: SubnetId,
        /// Epoch (default: current).
        #[arg(long)]
        epoch: Option<Epoch>,
        /// Scores as `node=score,node=score` (integers).
        #[arg(long, default_value = "")]
        scores: String,
    },
    /// Attest the epoch's proposal (a snapshot validator's hotkey).
    Attest {
        /// Subnet id.
        #[arg(long)]
        subnet: SubnetId,
        /// Epoch (default: current).
        #[arg(long)]
        epoch: Option<Epoch>,
    },
}

fn amount(text: &str, what: &str) -> Result<Balance> {
    parse_tensor(text).with_context(|| format!("invalid {what} `{text}` (TENSOR, like 100 or 0.5)"))
}

fn peer(text: &str) -> Result<PeerId> {
    text.parse()
        .map_err(|e| anyhow::anyhow!("invalid peer id `{text}`: {e}"))
}

/// Parses `1=100,2=50` into sorted `(node, score)` pairs.
fn parse_scores(text: &str) -> Result<Vec<(NodeId, u128)>> {
    let mut scores = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((node, score)) = item.split_once('=') else {
            bail!("score `{item}` must be node=score");
        };
        let node: NodeId = node
            .trim()
            .parse()
            .with_context(|| format!("bad node id in `{item}`"))?;
        let score: u128 = score
            .trim()
            .parse()
            .with_context(|| format!("bad score in `{item}`"))?;
        scores.push((node, score));
    }
    scores.sort_unstable_by_key(|(node, _)| *node);
    Ok(scores)
}

fn signer(args: &TxArgs) -> Result<Keypair> {
    match (&args.key, &args.dev) {
        (Some(path), _) => read_key_file(path),
        (None, Some(name)) if DEV_ACCOUNT_NAMES.contains(&name.as_str()) => Ok(Keypair::dev(name)),
        (None, Some(name)) => bail!(
            "unknown dev account `{name}` ({})",
            DEV_ACCOUNT_NAMES.join(", ")
        ),
        (None, None) => bail!("give --key FILE or --dev NAME"),
    }
}

/// Runs `hypertensor tx`.
pub(crate) async fn run(args: TxArgs) -> Result<()> {
    submit(args).await
}

async fn submit(args: TxArgs) -> Result<()> {
    let key = signer(&args)?;
    let client = connect(&args.rpc).await?;
    let current_epoch = || async { anyhow::Ok(client.epoch_info().await?.epoch) };
    let call = match &args.call {
        TxCommand::Transfer { to, amount: a } => Call::Transfer {
            to: parse_account(to)?,
            amount: amount(a, "amount")?,
        },
        TxCommand::RegisterSubnet {
            name,
            model,
            min_stake,
            max_stake,
            initial_validators,
        } => Call::RegisterSubnet {
            name: name.clone(),
            model: model.clone(),
            min_stake: amount(min_stake, "min stake")?,
            max_stake: amount(max_stake, "max stake")?,
            initial_validators: initial_validators
                .iter()
                .map(|p| peer(p))
                .collect::<Result<_>>()?,
        },
        TxCommand::ActivateSubnet { subnet } => Call::ActivateSubnet { subnet: *subnet },
        TxCommand::RegisterNode {
            subnet,
            hotkey,
            peer_id,
            client_peer_id,
            stake,
        } => Call::RegisterSubnetNode {
            subnet: *subnet,
            hotkey: parse_account(hotkey)?,
            peer_id: peer(peer_id)?,
            client_peer_id: client_peer_id.as_deref().map(peer).transpose()?,
            stake: amount(stake, "stake")?,
        },
        TxCommand::ActivateNode { subnet, node } => Call::ActivateSubnetNode {
            subnet: *subnet,
            node: *node,
        },
        TxCommand::AddStake {
            subnet,
            node,
            amount: a,
        } => Call::AddStake {
            subnet: *subnet,
            node: *node,
            amount: amount(a, "amount")?,
        },
        TxCommand::RemoveStake {
            subnet,
            node,
            amount: a,
        } => Call::RemoveStake {
            subnet: *subnet,
            node: *node,
            amount: amount(a, "amount")?,
        },
        TxCommand::RemoveNode { subnet, node } => Call::RemoveSubnetNode {
            subnet: *subnet,
            node: *node,
        },
        TxCommand::ClaimUnbonded => Call::ClaimUnbonded,
        TxCommand::Propose {
            subnet,
            epoch,
            scores,
        } => Call::ProposeAttestation {
            subnet: *subnet,
            epoch: match epoch {
                Some(e) => *e,
                None => current_epoch().await?,
            },
            scores: parse_scores(scores)?,
        },
        TxCommand::Attest { subnet, epoch } => Call::Attest {
            subnet: *subnet,
            epoch: match epoch {
                Some(e) => *e,
                None => current_epoch().await?,
            },
        },
    };
    let genesis = client.health().await?.genesis_hash;
    let nonce = client.account(&key.account_id()).await?.next_nonce;
    let xt = Extrinsic::sign(&key, nonce, call, &genesis);
    if args.no_wait {
        let submitted = client.submit_extrinsic(&xt).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&submitted)?);
        } else {
            println!("submitted {} (nonce {nonce})", submitted.hash);
        }
        return Ok(());
    }
    let inclusion = client
        .submit_and_watch(&xt, Duration::from_secs(args.timeout))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inclusion)?);
    } else {
        print_inclusion(&inclusion);
    }
    if let Some(error) = inclusion.failure() {
        bail!("the call failed in block {}: {error}", inclusion.height);
    }
    Ok(())
}

fn print_inclusion(inc: &Inclusion) {
    println!(
        "included in block {} ({}) at index {}: extrinsic {}",
        inc.height, inc.block, inc.index, inc.extrinsic
    );
    for record in &inc.events {
        println!("  {}", describe(&record.event));
    }
}

/// One line per event; amounts in TENSOR where the event is about money.
fn describe(event: &Event) -> String {
    match event {
        Event::FeePaid { who, amount, .. } => {
            format!("fee paid by {who}: {} TENSOR", format_tensor(*amount))
        }
        Event::Transfer { from, to, amount } => {
            format!(
                "transfer {} TENSOR from {from} to {to}",
                format_tensor(*amount)
            )
        }
        Event::ExtrinsicSuccess => "success".to_string(),
        Event::ExtrinsicFailed { error } => format!("FAILED: {error}"),
        other => serde_json::to_string(other).unwrap_or_else(|_| format!("{other:?}")),
    }
}
