//! One subnet node wired together: chain connection, P2P layer with the
//! chain's proof of stake and phase clock, an optional block server, the
//! consensus loop and an optional gateway API.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hypertensor_api::ApiConfig;
use hypertensor_consensus::phase::PhaseParams;
use hypertensor_inference::{
    BlockServer, ClientConfig, ServerConfig, SwarmBackend, SwarmClient, p2p_config,
};
use hypertensor_model::{BlockSpan, GgufFile};
use hypertensor_p2p::{CachingStakeOracle, Client, Multiaddr};
use hypertensor_primitives::Keypair;
use hypertensor_runtime::{NodeClass, SubnetId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chain::ChainConnection;
use crate::clock::{ChainClock, HEAD_SILENCE, PHASE_GRACE_BLOCKS};
use crate::dht::LoopMetrics;
use crate::epoch_loop::{Behaviour, ConsensusConfig, ConsensusLoop, Hosting, LoopStatus};
use crate::schemas::with_consensus_schemas;
use crate::stake::ChainStake;

/// What a node serves besides consensus.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Blocks to serve.
    pub blocks: Range<usize>,
    /// Bytes of KV cache all sessions together may hold.
    pub cache_bytes: usize,
    /// Throughput to announce instead of measuring it.
    pub throughput: Option<f64>,
}

/// Everything [`start_node`] needs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's identity; also its hotkey on chain.
    pub keypair: Keypair,
    /// The subnet.
    pub subnet: SubnetId,
    /// The chain's RPC URL (`ws://…` or `http://…`).
    pub chain_url: String,
    /// The model file.
    pub model_path: PathBuf,
    /// The model's name in DHT keys.
    pub model_name: String,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Addresses to announce.
    pub announce: Vec<Multiaddr>,
    /// Peers to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// Serve a span of blocks (a hoster).
    pub host: Option<HostOptions>,
    /// Take part in consensus (hosters and validators do; a gateway
    /// does not).
    pub consensus: bool,
    /// Serve the OpenAI-compatible API here (a gateway).
    pub api: Option<SocketAddr>,
    /// The API's limits (connections, bodies, timeouts, queue).
    pub api_config: ApiConfig,
    /// Honest, or a fault to inject.
    pub behaviour: Behaviour,
}

impl NodeOptions {
    /// An honest node of `subnet` with no span and no API, listening on
    /// an ephemeral loopback port.
    pub fn new(keypair: Keypair, subnet: SubnetId, chain_url: &str, model_path: PathBuf) -> Self {
        NodeOptions {
            keypair,
            subnet,
            chain_url: chain_url.to_string(),
            model_path,
            model_name: "smollm2".to_string(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")],
            announce: Vec::new(),
            bootstrap: Vec::new(),
            host: None,
            consensus: true,
            api: None,
            api_config: ApiConfig::default(),
            behaviour: Behaviour::Honest,
        }
    }
}

/// A running node. Dropping it stops every task.
pub struct RunningNode {
    /// Its P2P client.
    pub p2p: Client,
    /// Its block server, if it hosts.
    pub server: Option<Arc<BlockServer>>,
    /// The consensus loop's status, if it runs one.
    pub status: Option<watch::Receiver<LoopStatus>>,
    /// The consensus loop's counters, if it runs one.
    pub metrics: Option<Arc<LoopMetrics>>,
    /// The API's address, if it serves one.
    pub api_addr: Option<SocketAddr>,
    tasks: Tasks,
    api: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Tasks aborted when dropped, so a node that fails half-way through
/// starting leaves nothing running.
#[derive(Default)]
pub(crate) struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    pub(crate) fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(task));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Longest the API may take to finish its responses at [`RunningNode::stop`].
const API_DRAIN: Duration = Duration::from_secs(5);

impl RunningNode {
    /// The node's addresses with its peer id, to bootstrap others.
    pub async fn dial_addrs(&self) -> Result<Vec<Multiaddr>> {
        let id = self.p2p.peer_id();
        Ok(self
            .p2p
            .listen_addrs()
            .await?
            .into_iter()
            .map(|a| a.with_p2p(id).unwrap_or_else(|a| a))
            .collect())
    }

    /// Stops the node: the API finishes its responses (for a few seconds at
    /// most), then everything else stops.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.api.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(API_DRAIN, task).await;
        }
        for task in self.tasks.0.drain(..) {
            task.abort();
        }
    }
}

/// Starts a node on the current tokio runtime.
pub async fn start_node(options: NodeOptions) -> Result<RunningNode> {
    let chain = ChainConnection::connect(&options.chain_url)
        .await
        .with_context(|| format!("cannot reach the chain at {}", options.chain_url))?;
    let rpc = chain.client().await;
    let genesis = rpc.health().await?.genesis_hash;
    let params = rpc.parameters().await?;
    let height = rpc.epoch_info().await?.height;
    let phases = PhaseParams::default();
    let clock = Arc::new(ChainClock::new(
        height,
        params.epoch_length,
        phases,
        PHASE_GRACE_BLOCKS,
    ));
    // Records live three epochs: read in their epoch and the next.
    let epoch_time =
        Duration::from_millis(params.block_time_ms.saturating_mul(params.epoch_length));
    let record_ttl = (epoch_time * 3).max(Duration::from_secs(60));
    let stake = CachingStakeOracle::new(ChainStake::new(
        chain.clone(),
        options.subnet,
        NodeClass::Registered,
    ));
    let mut config = p2p_config(
        options.keypair.clone(),
        options.subnet,
        genesis,
        &options.model_name,
        Arc::new(stake),
    );
    config.phase = clock.clone();
    // Writers' clocks differ: accept twice the lifetime they ask for.
    config.schemas = with_consensus_schemas(config.schemas, record_ttl * 2);
    config.listen = options.listen.clone();
    config.announce = options.announce.clone();
    config.bootstrap = options.bootstrap.clone();
    let (p2p, events, event_loop) =
        hypertensor_p2p::new(config).context("cannot start the P2P node")?;
    let mut tasks = Tasks::default();
    tasks.spawn(event_loop.run());
    tasks.spawn(follow_heads(chain.clone(), clock.clone()));
    if !options.bootstrap.is_empty() {
        p2p.wait_for_peers(Duration::from_secs(5)).await;
    }

    let gguf = GgufFile::open(&options.model_path)
        .with_context(|| format!("cannot open {}", options.model_path.display()))?;
    let model = gguf.config()?;
    let mut server = None;
    let mut hosting = None;
    match &options.host {
        Some(host) => {
            if host.blocks.is_empty() || host.blocks.end > model.n_blocks {
                bail!(
                    "blocks {}..{} do not fit the model's {} blocks",
                    host.blocks.start,
                    host.blocks.end,
                    model.n_blocks
                );
            }
            let span = BlockSpan::load(&gguf, host.blocks.clone())?;
            let mut server_config = ServerConfig::new(&options.model_name);
            server_config.cache_budget_bytes = host.cache_bytes;
            server_config.throughput = host.throughput;
            let block_server = Arc::new(BlockServer::new(span, server_config)?);
            hosting = Some(Hosting {
                span: block_server.shared_span(),
                server: Some(block_server.clone()),
            });
            tasks.spawn(block_server.clone().run(p2p.clone(), events));
            server = Some(block_server);
        }
        None => drop(events),
    }

    let (mut status, mut metrics) = (None, None);
    if options.consensus {
        let mut consensus = ConsensusConfig::new(
            options.subnet,
            options.keypair.clone(),
            u32::try_from(model.n_blocks).context("block count")?,
            model.hidden_size,
        );
        consensus.record_ttl = record_ttl;
        consensus.phases = phases;
        consensus.behaviour = options.behaviour;
        let consensus_loop =
            ConsensusLoop::new(consensus, p2p.clone(), chain.clone(), clock, hosting).await?;
        status = Some(consensus_loop.status());
        metrics = Some(consensus_loop.metrics());
        tasks.spawn(consensus_loop.run());
    }

    let (mut api_addr, mut api) = (None, None);
    if let Some(addr) = options.api {
        let client = SwarmClient::load(
            &options.model_path,
            p2p.clone(),
            tokio::runtime::Handle::current(),
            ClientConfig::new(&options.model_name),
        )?;
        let backend = Arc::new(SwarmBackend::new(&options.model_name, Arc::new(client)));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        api_addr = Some(listener.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let api_config = options.api_config.clone();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = hypertensor_api::serve(listener, backend, &api_config, stop).await {
                tracing::error!(error = %e, "the API server stopped");
            }
        });
        api = Some((stop_tx, task));
    }

    Ok(RunningNode {
        p2p,
        server,
        status,
        metrics,
        api_addr,
        tasks,
        api,
    })
}

/// Keeps the DHT's phase clock at the chain's latest head, for every node
/// (a gateway validates consensus records it holds too), reconnecting when
/// the chain goes away.
async fn follow_heads(chain: Arc<ChainConnection>, clock: Arc<ChainClock>) {
    loop {
        let client = chain.client().await;
        match client.subscribe_new_heads().await {
            Ok(mut heads) => loop {
                match tokio::time::timeout(HEAD_SILENCE, heads.next()).await {
                    Ok(Some(Ok(head))) => clock.set_height(head.header.height),
                    Ok(Some(Err(e))) => tracing::warn!(error = %e, "bad head notification"),
                    Ok(None) => break,
                    Err(_) => {
                        tracing::warn!(?HEAD_SILENCE, "no new head for too long");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot follow the chain's heads"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        chain.reconnect(&client).await;
    }
}
