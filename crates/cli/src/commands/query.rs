//! `hypertensor query ...`: read chain state over JSON-RPC, pretty by
//! default, `--json` for machines.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hypertensor_chain_client::{BlockId, Client};
use hypertensor_primitives::{AccountId, DEV_ACCOUNT_NAMES, Keypair, PeerId, format_tensor};
use hypertensor_runtime::{Epoch, NodeClass, SubnetId, SubnetNode};
use serde::Serialize;

/// Default RPC endpoint.
pub(crate) const DEFAULT_RPC: &str = "ws://127.0.0.1:9944";

/// Arguments of `hypertensor query`.
#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// Chain node RPC URL (ws:// or http://, same port).
    #[arg(long, default_value = DEFAULT_RPC)]
    pub(crate) rpc: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) what: QueryCommand,
}

/// What to read.
#[derive(Debug, Subcommand)]
pub(crate) enum QueryCommand {
    /// Balance, nonce and unbonding of an account (0x-hex or dev name).
    Account {
        /// The account.
        account: String,
    },
    /// Issuance and where it is (free, staked, unbonding, vault, treasury).
    Totals,
    /// A subnet.
    Subnet {
        /// Subnet id.
        subnet: SubnetId,
    },
    /// The nodes of a subnet.
    Nodes {
        /// Subnet id.
        subnet: SubnetId,
    },
    /// Whether a peer id is staked in a subnet with at least a class.
    ProofOfStake {
        /// Subnet id.
        subnet: SubnetId,
        /// Peer id (12D3KooW...).
        peer_id: String,
        /// Least class: registered, idle, included or validator.
        #[arg(long, default_value = "idle")]
        min_class: String,
    },
    /// The elected validator of a subnet (current epoch by default).
    ElectedValidator {
        /// Subnet id.
        subnet: SubnetId,
        /// Epoch.
        #[arg(long)]
        epoch: Option<Epoch>,
    },
    /// Consensus data of a subnet's epoch (current by default).
    Consensus {
        /// Subnet id.
        subnet: SubnetId,
        /// Epoch.
        #[arg(long)]
        epoch: Option<Epoch>,
    },
    /// Current epoch, progress and block time.
    Epoch,
    /// Chain parameters.
    Params,
    /// Node health: best block, genesis, pending extrinsics.
    Health,
    /// A block header (best by default; height or 0x-hash).
    Header {
        /// Height or hash.
        block: Option<String>,
    },
    /// A block (best by default; height or 0x-hash).
    Block {
        /// Height or hash.
        block: Option<String>,
    },
    /// A block's events (best by default; height or 0x-hash).
    Events {
        /// Height or hash.
        block: Option<String>,
    },
}

/// An account given as `0x` + 64 hex digits or a dev account name.
pub(crate) fn parse_account(text: &str) -> Result<AccountId> {
    if text.starts_with("0x") || text.starts_with("0X") {
        return text
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid account id `{text}`: {e}"));
    }
    if DEV_ACCOUNT_NAMES.contains(&text) {
        return Ok(Keypair::dev(text).account_id());
    }
    bail!(
        "`{text}` is neither an account id (0x + 64 hex digits) nor a dev account ({})",
        DEV_ACCOUNT_NAMES.join(", ")
    )
}

fn parse_block(text: Option<&str>) -> Result<Option<BlockId>> {
    let Some(text) = text else { return Ok(None) };
    if text.starts_with("0x") {
        let hash = text
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid block hash `{text}`: {e}"))?;
        return Ok(Some(BlockId::Hash(hash)));
    }
    let height = text
        .parse()
        .with_context(|| format!("`{text}` is neither a block height nor a 0x block hash"))?;
    Ok(Some(BlockId::Height(height)))
}

fn parse_class(text: &str) -> Result<NodeClass> {
    serde_json::from_str(&format!("\"{text}\"")).map_err(|_| {
        anyhow::anyhow!("unknown class `{text}`: use registered, idle, included or validator")
    })
}

/// Connects to the node, with an error naming the URL.
/// A node that answered and refused (its connection caps) is reported as
/// such, not as a missing node.
pub(crate) async fn connect(url: &str) -> Result<Client> {
    match Client::connect(url).await {
        Ok(client) => Ok(client),
        Err(e @ hypertensor_chain_client::Error::Connect { .. }) => {
            Err(e).with_context(|| format!("is a chain node running at {url}? (see --rpc)"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs a query.
pub(crate) async fn run(args: QueryArgs) -> Result<()> {
    query(args).await
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn query(args: QueryArgs) -> Result<()> {
    let client = connect(&args.rpc).await?;
    let json = args.json;
    match args.what {
        QueryCommand::Account { account } => {
            let info = client.account(&parse_account(&account)?).await?;
            if json {
                return print_json(&info);
            }
            println!("account:    {}", info.account);
            println!("free:       {} TENSOR", format_tensor(info.free));
            println!("nonce:      {} (next {})", info.nonce, info.next_nonce);
            for entry in &info.unbonding {
                println!(
                    "unbonding:  {} TENSOR claimable at epoch {}",
                    format_tensor(entry.amount),
                    entry.claimable_epoch
                );
            }
        }
        QueryCommand::Totals => {
            let t = client.totals().await?;
            if json {
                return print_json(&t);
            }
            for (name, value) in [
                ("issuance", t.issuance),
                ("free", t.free),
                ("staked", t.staked),
                ("unbonding", t.unbonding),
                ("vault", t.vault),
                ("treasury", t.treasury),
            ] {
                println!("{name:<10} {} TENSOR", format_tensor(value));
            }
            let conserved = t.accounted() == Some(t.issuance);
            println!("conserved  {}", if conserved { "yes" } else { "NO" });
        }
        QueryCommand::Subnet { subnet } => {
            let Some(s) = client.subnet(subnet).await? else {
                bail!("no subnet {subnet}");
            };
            if json {
                return print_json(&s);
            }
            println!("subnet {} `{}` ({:?})", s.id, s.name, s.state);
            println!("model:      {}", s.model);
            println!("owner:      {}", s.owner);
            println!(
                "stake:      {} .. {} TENSOR",
                format_tensor(s.min_stake),
                format_tensor(s.max_stake)
            );
            println!("nodes:      {}", s.nodes.len());
        }
        QueryCommand::Nodes { subnet } => {
            let nodes = client.subnet_nodes(subnet).await?;
            if json {
                return print_json(&nodes);
            }
            print_nodes(&nodes);
        }
        QueryCommand::ProofOfStake {
            subnet,
            peer_id,
            min_class,
        } => {
            let peer: PeerId = peer_id
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid peer id `{peer_id}`: {e}"))?;
            let ok = client
                .proof_of_stake(subnet, &peer, parse_class(&min_class)?)
                .await?;
            if json {
                return print_json(&ok);
            }
            println!("{ok}");
        }
        QueryCommand::ElectedValidator { subnet, epoch } => {
            let node = client.elected_validator(subnet, epoch).await?;
            if json {
                return print_json(&node);
            }
            match node {
                Some(node) => print_nodes(&[node]),
                None => println!("no elected validator"),
            }
        }
        QueryCommand::Consensus { subnet, epoch } => {
            print_json(&client.consensus_data(subnet, epoch).await?)?;
        }
        QueryCommand::Epoch => {
            let e = client.epoch_info().await?;
            if json {
                return print_json(&e);
            }
            println!(
                "epoch {} at height {} (block {} of {}, progress {}), next epoch at {}, block time {} ms",
                e.epoch,
                e.height,
                e.block_in_epoch,
                e.epoch_length,
                e.progress,
                e.next_epoch_height,
                e.block_time_ms
            );
        }
        QueryCommand::Params => print_json(&client.parameters().await?)?,
        QueryCommand::Health => {
            let h = client.health().await?;
            if json {
                return print_json(&h);
            }
            println!("height:     {}", h.height);
            println!("best:       {}", h.best_hash);
            println!("genesis:    {}", h.genesis_hash);
            println!("pending:    {}", h.pending_extrinsics);
        }
        QueryCommand::Header { block } => {
            print_json(&client.header(parse_block(block.as_deref())?).await?)?;
        }
        QueryCommand::Block { block } => {
            print_json(&client.block(parse_block(block.as_deref())?).await?)?;
        }
        QueryCommand::Events { block } => {
            print_json(&client.events(parse_block(block.as_deref())?).await?)?;
        }
    }
    Ok(())
}

fn print_nodes(nodes: &[SubnetNode]) {
    println!(
        "{:>4}  {:<10} {:>14}  {:>3}  peer id",
        "id", "class", "stake", "pen"
    );
    for n in nodes {
        println!(
            "{:>4}  {:<10} {:>14}  {:>3}  {}",
            n.id,
            format!("{:?}", n.class).to_lowercase(),
            format_tensor(n.stake),
            n.penalties,
            n.peer_id
        );
    }
}
