//! The whole system on one machine (SPEC §7): a development chain, a
//! subnet for the model registered and activated through real
//! transactions, staked hosters covering every block, validators, and a
//! gateway serving the OpenAI-compatible API, every node with its own
//! libp2p swarm on loopback and its own connection to the chain's RPC.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use hypertensor_chain::{ChainConfig, Node as ChainNode};
use hypertensor_chain_client::{BlockId, Client as ChainClient};
use hypertensor_inference::{DEFAULT_CHECK_RATE, ServingFault};
use hypertensor_model::GgufFile;
use hypertensor_primitives::{Balance, Keypair, TENSOR};
use hypertensor_runtime::{
    Call, Event, GenesisAccount, GenesisConfig, NodeClass, NodeId, SettlementOutcome, SubnetId,
    SubnetState,
};
use tokio::task::JoinHandle;

use crate::builder::{HostOptions, NodeBuilder, NodeOptions, SpanChoice};
use crate::epoch_loop::DutiesWrapper;
use crate::error::{NodeError, NodeResult as Result};
use crate::running::RunningNode;

/// Transactions watched at once on one chain connection (the chain's RPC
/// allows 16 subscriptions per connection).
const MAX_WATCHES: usize = 8;

/// Shortest epoch the devnet runs: reveal windows of two blocks.
pub const MIN_EPOCH_LENGTH: u64 = 20;

/// Stake each devnet node bonds.
pub const NODE_STAKE: Balance = 1_000 * TENSOR;
/// Hosters serving each block by default: distance to the mean needs a
/// majority of honest answers.
pub const DEFAULT_HOSTERS_PER_BLOCK: usize = 3;

/// Chain validators of a devnet unless told otherwise: four tolerate one
/// down (simplex needs 3 of 4).
pub const DEFAULT_CHAIN_VALIDATORS: usize = 4;

/// What to run.
#[derive(Clone, Debug)]
pub struct DevnetConfig {
    /// Where the chain keeps its database.
    pub dir: PathBuf,
    /// The model file.
    pub model_path: PathBuf,
    /// The model's name in DHT keys and the subnet's name.
    pub model_name: String,
    /// Hosters (default: [`DEFAULT_HOSTERS_PER_BLOCK`] per block).
    pub hosters: Option<usize>,
    /// Validators that host nothing.
    pub validators: usize,
    /// Blocks each hoster serves.
    pub blocks_per_hoster: usize,
    /// Chain blocks per epoch.
    pub epoch_length: u64,
    /// Milliseconds between chain blocks.
    pub block_time_ms: u64,
    /// Chain validators finalizing the chain (each its own store, RPC
    /// and P2P socket on loopback).
    pub chain_validators: usize,
    /// The gateway's API address (port 0 picks one).
    pub api_addr: SocketAddr,
    /// The gateway API's limits.
    pub api_config: hypertensor_api::ApiConfig,
    /// Faulty nodes, by name (`hoster-2`, `validator-0`, …): a wrapper
    /// over each one's consensus duties (see `hypertensor_duties::byzantine`).
    pub faults: BTreeMap<String, DutiesWrapper>,
    /// Throughput hosters announce instead of measuring it.
    pub throughput: Option<f64>,
    /// Throughput particular hosters announce instead, by name.
    pub throughputs: BTreeMap<String, f64>,
    /// Hosters serving corrupted outputs, by name (tests of verified
    /// serving).
    pub serving_faults: BTreeMap<String, ServingFault>,
    /// Share of the gateway's sequences spot-checked.
    pub check_rate: f64,
    /// Seed of the gateway's spot-check draws (`None`: from the OS).
    pub check_seed: Option<u64>,
    /// Run the consensus loops (off only to measure a baseline: the
    /// subnet then never reaches consensus).
    pub consensus: bool,
}

impl DevnetConfig {
    /// SPEC's devnet: 20-block epochs of 1 s blocks, two validators,
    /// hosters of 10 blocks, API on 127.0.0.1:8000.
    pub fn new(dir: PathBuf, model_path: PathBuf, model_name: &str) -> Self {
        DevnetConfig {
            dir,
            model_path,
            model_name: model_name.to_string(),
            hosters: None,
            validators: 2,
            blocks_per_hoster: 10,
            epoch_length: 20,
            block_time_ms: 1000,
            chain_validators: DEFAULT_CHAIN_VALIDATORS,
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            api_config: hypertensor_api::ApiConfig::default(),
            faults: BTreeMap::new(),
            throughput: None,
            throughputs: BTreeMap::new(),
            serving_faults: BTreeMap::new(),
            check_rate: DEFAULT_CHECK_RATE,
            check_seed: None,
            consensus: true,
        }
    }
}

/// What a devnet node does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Serves these blocks (and validates once Validator class).
    Hoster(Range<usize>),
    /// Validates only.
    Validator,
}

/// A devnet node's keys and job.
#[derive(Clone, Debug)]
pub struct Member {
    /// `hoster-<i>` or `validator-<i>`.
    pub name: String,
    /// Its job.
    pub role: Role,
    /// Its P2P identity and hotkey.
    pub identity: Keypair,
    /// The account that stakes for it and receives its rewards.
    pub owner: Keypair,
}

/// The devnet's nodes: validators first (the subnet's initial validators
/// are the first three), then hosters, spans dealt round-robin so each
/// block is served by about `hosters / segments` hosters.
pub fn roster(
    n_blocks: usize,
    hosters: Option<usize>,
    validators: usize,
    blocks_per_hoster: usize,
) -> Result<Vec<Member>> {
    if blocks_per_hoster == 0 {
        return Err(invalid("--blocks-per-hoster must be at least 1".into()));
    }
    let k = blocks_per_hoster.min(n_blocks);
    let segments = n_blocks.div_ceil(k);
    let hosters = hosters.unwrap_or(segments * DEFAULT_HOSTERS_PER_BLOCK);
    if hosters < segments {
        return Err(invalid(format!(
            "{hosters} hosters of {k} blocks cannot cover the model's {n_blocks} blocks"
        )));
    }
    if hosters + validators < 3 {
        return Err(invalid(
            "a subnet needs at least 3 nodes; ask for more hosters or validators".into(),
        ));
    }
    let member = |name: String, role: Role| Member {
        identity: Keypair::dev(&format!("devnet/{name}")),
        owner: Keypair::dev(&format!("devnet/{name}/owner")),
        name,
        role,
    };
    let mut members: Vec<Member> = (0..validators)
        .map(|i| member(format!("validator-{i}"), Role::Validator))
        .collect();
    for i in 0..hosters {
        let s = i % segments;
        let blocks = s * k..((s + 1) * k).min(n_blocks);
        members.push(member(format!("hoster-{i}"), Role::Hoster(blocks)));
    }
    Ok(members)
}

/// A running devnet. Dropping it stops everything.
pub struct Devnet {
    /// The chain validators' RPC URLs, comma-separated (clients fail over
    /// from one to the next).
    pub chain_url: String,
    /// The subnet.
    pub subnet: SubnetId,
    /// The nodes, in roster order, with what runs them.
    pub nodes: Vec<(Member, RunningNode)>,
    /// The gateway (no stake; serves the API).
    pub gateway: RunningNode,
    /// The API's address.
    pub api_addr: SocketAddr,
    /// The chain client the devnet set things up with.
    pub chain: ChainClient,
    chains: Vec<ChainValidator>,
    activation: Option<JoinHandle<Result<()>>>,
}

fn invalid(reason: String) -> NodeError {
    NodeError::InvalidConfig(reason)
}

fn starting(name: &str, error: NodeError) -> NodeError {
    NodeError::Start {
        name: name.to_string(),
        source: Box::new(error),
    }
}

fn failed(what: &str, reason: impl std::fmt::Display) -> NodeError {
    NodeError::Transaction {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// One of the devnet's chain validators.
struct ChainValidator {
    config: ChainConfig,
    task: Option<JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ChainValidator {
    async fn start(&mut self) -> Result<()> {
        let (addr, task, stop) = spawn_chain(self.config.clone()).await?;
        // A restart binds the same port, so clients find it again.
        self.config.rpc_addr = addr;
        self.task = Some(task);
        self.stop = Some(stop);
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.config.rpc_addr)
    }
}

/// A free TCP port on loopback (for a validator's P2P socket, which the
/// genesis names before the validator starts, so the port must stay free
/// until then).
///
/// The port is taken below the kernel's ephemeral range: a port the kernel
/// hands out for `:0` is also where it picks the source ports of outgoing
/// connections, and one of those (any test or node connecting anywhere)
/// took a devnet validator's port between this check and its bind. The
/// search starts at a random point so concurrent devnets spread out.
fn free_port() -> Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16;
    if ephemeral_low > low + 1000 {
        let span = ephemeral_low - low;
        let start = rand::random_range(0..span);
        for i in 0..span {
            let port = low + (start + i) % span;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| invalid(format!("no free port on loopback: {e}")))
}

/// Runs a chain node until told to stop.
async fn spawn_chain(
    config: ChainConfig,
) -> Result<(
    std::net::SocketAddr,
    JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
)> {
    let node = ChainNode::start(config).await?;
    let addr = node.rpc_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let stop = async {
            let _ = stop_rx.await;
        };
        if let Err(e) = node.run_until(stop).await {
            tracing::error!(error = %e, "the chain stopped");
        }
    });
    Ok((addr, task, stop_tx))
}

/// The devnet's genesis without its chain validators: the development
/// genesis with `config`'s epoch length and block time, each member's
/// owner funded for twice [`NODE_STAKE`] and its hotkey for the fees of
/// its submissions. Labs that run the chain elsewhere add their
/// validators to it.
pub fn genesis(config: &DevnetConfig, members: &[Member]) -> GenesisConfig {
    let mut genesis = GenesisConfig::dev();
    genesis.params.epoch_length = config.epoch_length;
    genesis.params.block_time_ms = config.block_time_ms;
    for m in members {
        genesis.accounts.push(GenesisAccount {
            account: m.owner.account_id(),
            balance: 2 * NODE_STAKE,
        });
        // Hotkeys pay nothing for valid proposals and attestations, but a
        // submission must be able to cover the base fee.
        genesis.accounts.push(GenesisAccount {
            account: m.identity.account_id(),
            balance: TENSOR,
        });
    }
    genesis
}

impl Devnet {
    /// Starts the chain, registers the subnet and its nodes, starts every
    /// node and the gateway, and activates nodes and subnet in the
    /// background as soon as the chain allows (the next epoch). Returns
    /// once the gateway serves the API.
    pub async fn start(config: DevnetConfig) -> Result<Devnet> {
        let gguf = GgufFile::open(&config.model_path).map_err(|source| NodeError::ModelFile {
            path: config.model_path.clone(),
            source,
        })?;
        let n_blocks = gguf.config()?.n_blocks;
        let members = roster(
            n_blocks,
            config.hosters,
            config.validators,
            config.blocks_per_hoster,
        )?;
        if config.epoch_length < MIN_EPOCH_LENGTH {
            return Err(invalid(format!(
                "--epoch-length must be at least {MIN_EPOCH_LENGTH} blocks: the reveal windows \
                 are 10% of it, each read waits a block of grace, and attestations need the \
                 blocks after the proposal"
            )));
        }
        for name in config.faults.keys() {
            if !members.iter().any(|m| &m.name == name) {
                return Err(invalid(format!("no devnet node is called `{name}`")));
            }
        }

        if config.chain_validators == 0 {
            return Err(invalid("--chain-validators must be at least 1".into()));
        }
        let mut genesis = genesis(&config, &members);
        let keys: Vec<Keypair> = (0..config.chain_validators)
            .map(|i| Keypair::dev(&format!("devnet/chain-validator-{i}")))
            .collect();
        for key in &keys {
            genesis
                .validators
                .push(hypertensor_runtime::ChainValidator {
                    account: key.account_id(),
                    address: format!("127.0.0.1:{}", free_port()?),
                });
        }
        let mut chains = Vec::with_capacity(keys.len());
        for (i, key) in keys.into_iter().enumerate() {
            let mut chain_config = ChainConfig::dev(
                config.dir.join(format!("chain-{i}")),
                SocketAddr::from(([127, 0, 0, 1], 0)),
            );
            chain_config.genesis = genesis.clone();
            chain_config.validator_key = key;
            chain_config.block_time = Some(Duration::from_millis(config.block_time_ms));
            let mut validator = ChainValidator {
                config: chain_config,
                task: None,
                stop: None,
            };
            validator.start().await?;
            chains.push(validator);
        }
        let chain_url = chains
            .iter()
            .map(ChainValidator::url)
            .collect::<Vec<_>>()
            .join(",");
        let chain = ChainClient::connect(&chain_url).await?;
        let subnet = register(&chain, &config, &members).await?;

        let mut nodes: Vec<(Member, RunningNode)> = Vec::with_capacity(members.len());
        let mut bootstrap = Vec::new();
        for member in &members {
            let mut options = NodeOptions::new(
                member.identity.clone(),
                subnet,
                &chain_url,
                config.model_path.clone(),
            );
            options.model_name = config.model_name.clone();
            options.bootstrap = bootstrap.clone();
            options.consensus = config.consensus;
            options.wrap_duties = config.faults.get(&member.name).cloned();
            // Every node's metrics on their own port, as a node run alone
            // with `--metrics-addr` serves them.
            options.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
            if let Role::Hoster(blocks) = &member.role {
                options.host = Some(HostOptions {
                    blocks: SpanChoice::Blocks(blocks.clone()),
                    cache_bytes: 64 << 20,
                    throughput: config
                        .throughputs
                        .get(&member.name)
                        .copied()
                        .or(config.throughput),
                    fault: config.serving_faults.get(&member.name).copied(),
                });
            }
            let node = NodeBuilder::new(options)
                .start()
                .await
                .map_err(|e| starting(&member.name, e))?;
            if bootstrap.is_empty() {
                bootstrap = node.dial_addrs().await?;
            }
            nodes.push((member.clone(), node));
        }
        let mut gateway_options = NodeOptions::new(
            Keypair::dev("devnet/gateway"),
            subnet,
            &chain_url,
            config.model_path.clone(),
        );
        gateway_options.model_name = config.model_name.clone();
        gateway_options.bootstrap = bootstrap;
        gateway_options.consensus = false;
        gateway_options.api = Some(config.api_addr);
        gateway_options.api_config = config.api_config.clone();
        gateway_options.check_rate = config.check_rate;
        gateway_options.check_seed = config.check_seed;
        let gateway = NodeBuilder::new(gateway_options)
            .start()
            .await
            .map_err(|e| starting("the gateway", e))?;
        let api_addr = gateway
            .api_addr
            .ok_or_else(|| invalid("the gateway serves no API".into()))?;

        let activation = {
            let chain = ChainClient::connect(&chain_url).await?;
            let members = members.clone();
            tokio::spawn(async move { activate(&chain, subnet, &members).await })
        };
        Ok(Devnet {
            chain_url,
            subnet,
            nodes,
            gateway,
            api_addr,
            chain,
            chains,
            activation: Some(activation),
        })
    }

    /// Waits until the subnet is active (nodes and subnet activated).
    pub async fn wait_active(&mut self) -> Result<()> {
        if let Some(task) = self.activation.take() {
            task.await.map_err(|e| NodeError::Background {
                what: "activation",
                reason: e.to_string(),
            })??;
        }
        Ok(())
    }

    /// Stops every chain validator (each closes its database) and starts
    /// them again on the same directories and ports, as operators
    /// restarting them would; the nodes reconnect by themselves.
    pub async fn restart_chain(&mut self) -> Result<()> {
        for chain in &mut self.chains {
            chain.stop().await;
        }
        for chain in &mut self.chains {
            chain.start().await?;
        }
        self.chain = ChainClient::connect(&self.chain_url).await?;
        Ok(())
    }

    fn chain_validator(&mut self, index: usize) -> Result<&mut ChainValidator> {
        self.chains
            .get_mut(index)
            .ok_or_else(|| invalid(format!("no chain validator {index}")))
    }

    /// Stops chain validator `index` (as if its machine went down); the
    /// others go on finalizing while a quorum remains.
    pub async fn stop_chain_validator(&mut self, index: usize) -> Result<()> {
        self.chain_validator(index)?.stop().await;
        // The devnet's own client may have been on that one.
        self.chain = ChainClient::connect(&self.chain_url).await?;
        Ok(())
    }

    /// Starts chain validator `index` again on its store; it catches up
    /// on the blocks finalized meanwhile.
    pub async fn start_chain_validator(&mut self, index: usize) -> Result<()> {
        let chain = self.chain_validator(index)?;
        if chain.task.is_none() {
            chain.start().await?;
        }
        Ok(())
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&(Member, RunningNode)> {
        self.nodes.iter().find(|(m, _)| m.name == name)
    }

    /// Stops the nodes, the gateway and then the chain (which finishes its
    /// current block and closes its database).
    pub async fn stop(mut self) {
        if let Some(task) = self.activation.take() {
            task.abort();
        }
        self.gateway.stop().await;
        for (_, mut node) in self.nodes.drain(..) {
            node.stop().await;
        }
        for chain in &mut self.chains {
            chain.stop().await;
        }
    }

    /// What happened in epoch `epoch` (complete once it is settled, at the
    /// first block of the next epoch).
    pub async fn epoch_report(&self, epoch: u64) -> Result<EpochReport> {
        self.reporter().epoch_report(epoch).await
    }

    /// A reader of epoch reports that does not borrow the devnet, so a
    /// status display can run beside [`Devnet::wait_for_failure`].
    pub fn reporter(&self) -> EpochReporter {
        EpochReporter {
            chain_urls: self.chains.iter().map(ChainValidator::url).collect(),
            chain: self.chain.clone(),
            subnet: self.subnet,
            members: self.nodes.iter().map(|(m, _)| m.clone()).collect(),
        }
    }

    /// Waits until a critical task of any node (or of the gateway) stops,
    /// and says which node and task. Cancel-safe.
    pub async fn wait_for_failure(&mut self) -> NodeError {
        let waits = self
            .nodes
            .iter_mut()
            .map(|(m, node)| (m.name.clone(), node))
            .chain(std::iter::once(("gateway".to_string(), &mut self.gateway)))
            .map(|(name, node)| {
                Box::pin(async move {
                    let failure = node.wait_for_failure().await;
                    NodeError::NodeFailed {
                        name,
                        source: failure,
                    }
                })
            });
        futures::future::select_all(waits).await.0
    }
}

/// Reads a devnet's epoch reports (see [`Devnet::reporter`]).
#[derive(Clone)]
pub struct EpochReporter {
    chain_urls: Vec<String>,
    chain: ChainClient,
    subnet: SubnetId,
    members: Vec<Member>,
}

impl EpochReporter {
    /// Reads `subnet`'s reports for `members` through `chain`;
    /// `chain_urls` are the chain validators whose health
    /// [`EpochReporter::chain_status`] asks.
    pub fn new(
        chain_urls: Vec<String>,
        chain: ChainClient,
        subnet: SubnetId,
        members: Vec<Member>,
    ) -> Self {
        EpochReporter {
            chain_urls,
            chain,
            subnet,
            members,
        }
    }

    /// What happened in epoch `epoch` (complete once it is settled, at the
    /// first block of the next epoch).
    pub async fn epoch_report(&self, epoch: u64) -> Result<EpochReport> {
        epoch_report(&self.chain, self.subnet, epoch, &self.members).await
    }

    /// The chain client reports are read with.
    pub fn chain(&self) -> &ChainClient {
        &self.chain
    }

    /// Each chain validator's health (`None`: it does not answer within a
    /// second), in validator order.
    pub async fn chain_status(&self) -> Vec<Option<hypertensor_chain_client::Health>> {
        let mut out = Vec::with_capacity(self.chain_urls.len());
        for url in &self.chain_urls {
            let health = tokio::time::timeout(Duration::from_secs(1), async {
                ChainClient::connect(url).await?.health().await
            })
            .await;
            out.push(health.ok().and_then(|h| h.ok()));
        }
        out
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if let Some(task) = &self.activation {
            task.abort();
        }
        for chain in &mut self.chains {
            if let Some(stop) = chain.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

/// Registers the subnet (signed by the dev account alice, its first three
/// members its initial validators) and every member that is not
/// registered yet, each by its owner with [`NODE_STAKE`] (a devnet
/// restarted on the same directory finds them on chain).
pub async fn register(
    chain: &ChainClient,
    config: &DevnetConfig,
    members: &[Member],
) -> Result<SubnetId> {
    let alice = Keypair::dev("alice");
    let subnet: SubnetId = 1;
    if chain.subnet(subnet).await?.is_none() {
        let call = Call::RegisterSubnet {
            name: config.model_name.clone(),
            model: config
                .model_path
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("model")
                .to_string(),
            min_stake: 100 * TENSOR,
            max_stake: 10_000 * TENSOR,
            initial_validators: members
                .iter()
                .take(3)
                .map(|m| m.identity.peer_id())
                .collect(),
        };
        let inclusion = chain.sign_and_watch(&alice, call).await?;
        if let Some(e) = inclusion.failure() {
            return Err(failed("registering the subnet", e));
        }
    }
    let registered = chain.subnet_nodes(subnet).await?;
    let pending = members
        .iter()
        .filter(|m| !registered.iter().any(|n| n.peer_id == m.identity.peer_id()))
        .map(|m| async move {
            let call = Call::RegisterSubnetNode {
                subnet,
                hotkey: m.identity.account_id(),
                peer_id: m.identity.peer_id(),
                client_peer_id: None,
                stake: NODE_STAKE,
            };
            let inclusion = chain.sign_and_watch(&m.owner, call).await?;
            match inclusion.failure() {
                Some(e) => Err(failed(&format!("registering {}", m.name), e)),
                None => Ok(()),
            }
        });
    // The chain allows 16 subscriptions per connection and each
    // `sign_and_watch` holds one until its block.
    let outcomes: Vec<Result<()>> = futures::stream::iter(pending.collect::<Vec<_>>())
        .buffer_unordered(MAX_WATCHES)
        .collect()
        .await;
    for outcome in outcomes {
        outcome?;
    }
    Ok(subnet)
}

/// Activates every registered node once its start epoch comes (each by
/// its owner), then the subnet.
pub async fn activate(chain: &ChainClient, subnet: SubnetId, members: &[Member]) -> Result<()> {
    let mut heads = chain.subscribe_new_heads().await?;
    loop {
        let epoch = chain.epoch_info().await?.epoch;
        let nodes = chain.subnet_nodes(subnet).await?;
        let waiting: Vec<_> = nodes
            .iter()
            .filter(|n| n.class == NodeClass::Registered)
            .collect();
        if waiting.iter().all(|n| n.start_epoch <= epoch) {
            let activations = waiting.iter().map(|n| async move {
                let member = members
                    .iter()
                    .find(|m| m.identity.peer_id() == n.peer_id)
                    .ok_or_else(|| {
                        NodeError::ChainState("a node the devnet does not know".into())
                    })?;
                let call = Call::ActivateSubnetNode { subnet, node: n.id };
                let inclusion = chain.sign_and_watch(&member.owner, call).await?;
                match inclusion.failure() {
                    Some(e) => Err(failed(&format!("activating {}", member.name), e)),
                    None => Ok(()),
                }
            });
            let outcomes: Vec<Result<()>> = futures::stream::iter(activations.collect::<Vec<_>>())
                .buffer_unordered(MAX_WATCHES)
                .collect()
                .await;
            for outcome in outcomes {
                outcome?;
            }
            break;
        }
        heads
            .next()
            .await
            .ok_or_else(|| NodeError::ChainState("the head subscription ended".into()))??;
    }
    let state = chain
        .subnet(subnet)
        .await?
        .ok_or_else(|| NodeError::ChainState("the subnet vanished".into()))?;
    if state.state != SubnetState::Active {
        let call = Call::ActivateSubnet { subnet };
        let inclusion = chain.sign_and_watch(&Keypair::dev("alice"), call).await?;
        if let Some(e) = inclusion.failure() {
            return Err(failed("activating the subnet", e));
        }
    }
    tracing::info!(subnet, "subnet active");
    Ok(())
}

/// One node's line of an epoch's report.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeReport {
    /// The devnet's name for it.
    pub name: String,
    /// Its id on chain.
    pub node: NodeId,
    /// Its class after the epoch's settlement.
    pub class: NodeClass,
    /// Its proposed score (chain fraction), if the epoch had a proposal.
    pub score: Option<u128>,
    /// What its owner was paid at settlement.
    pub reward: Balance,
    /// Its owner's free balance after settlement.
    pub balance: Balance,
    /// Its penalties after settlement.
    pub penalties: u32,
}

/// What happened in one settled epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// The epoch.
    pub epoch: u64,
    /// The elected validator's node id, if the subnet was active.
    pub elected: Option<NodeId>,
    /// Snapshot size.
    pub snapshot: usize,
    /// The nodes that attested (the proposer included).
    pub attesters: BTreeSet<NodeId>,
    /// The settlement.
    pub outcome: Option<SettlementOutcome>,
    /// The rewards vault after settlement.
    pub vault: Balance,
    /// Every devnet node that is still on chain.
    pub nodes: Vec<NodeReport>,
}

async fn epoch_report(
    chain: &ChainClient,
    subnet: SubnetId,
    epoch: u64,
    members: &[Member],
) -> Result<EpochReport> {
    let consensus = chain.consensus_data(subnet, Some(epoch)).await?;
    let length = chain.parameters().await?.epoch_length;
    let settlement = (epoch + 1) * length;
    let events = chain
        .events(Some(BlockId::Height(settlement)))
        .await?
        .unwrap_or_default();
    let mut rewards: BTreeMap<NodeId, Balance> = BTreeMap::new();
    for record in &events {
        if let Event::RewardPaid {
            subnet: s,
            node,
            amount,
            ..
        } = &record.event
            && *s == subnet
        {
            *rewards.entry(*node).or_default() += amount;
        }
    }
    let on_chain = chain.subnet_nodes(subnet).await?;
    let mut nodes = Vec::new();
    for member in members {
        let Some(n) = on_chain
            .iter()
            .find(|n| n.peer_id == member.identity.peer_id())
        else {
            continue;
        };
        let score = consensus
            .as_ref()
            .and_then(|c| c.proposal.as_ref())
            .and_then(|p| p.iter().find(|(id, _)| *id == n.id).map(|(_, s)| *s));
        nodes.push(NodeReport {
            name: member.name.clone(),
            node: n.id,
            class: n.class,
            score,
            reward: rewards.get(&n.id).copied().unwrap_or(0),
            balance: chain.account(&member.owner.account_id()).await?.free,
            penalties: n.penalties,
        });
    }
    let vault = chain.totals().await?.vault;
    Ok(EpochReport {
        epoch,
        elected: consensus.as_ref().map(|c| c.validator),
        snapshot: consensus.as_ref().map_or(0, |c| c.snapshot.len()),
        attesters: consensus
            .as_ref()
            .map(|c| c.attestations.clone())
            .unwrap_or_default(),
        outcome: consensus.and_then(|c| c.outcome),
        vault,
        nodes,
    })
}
