//! The composition root: [`NodeBuilder`] assembles every node this
//! repository runs (`hypertensor node` with or without a chain, the
//! swarm client of `generate`/`chat --swarm`, each node of the devnet)
//! from one [`NodeOptions`], so the same option means the same thing on
//! every path.
//!
//! The order is fixed: chain connection and phase clock (with a chain),
//! the P2P layer, the head follower, the block server (its span resolved
//! against what the swarm already serves), the consensus loop, the swarm
//! client and the API. Every long-running part is a critical task of the
//! node's [`TaskManager`].

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hypertensor_api::{ApiConfig, MetricsRegistry, ReadyCheck, Surfaces, Tunings};
use hypertensor_consensus::phase::PhaseParams;
use hypertensor_inference::metrics::{ClientCollector, ServerCollector};
use hypertensor_inference::{
    AdmitAll, BlockServer, ClientConfig, DEFAULT_CHECK_RATE, EvidenceInbox, ServerConfig,
    ServingFault, SwarmBackend, SwarmClient, announced_servers, p2p_config, routing::weakest_span,
    take_evidence,
};
use hypertensor_model::{BlockSpan, GgufFile, ModelConfig};
use hypertensor_p2p::{CachingStakeOracle, Client, Event, Multiaddr};
use hypertensor_primitives::{H256, Keypair};
use hypertensor_runtime::{NodeClass, SubnetId};
use tokio::sync::mpsc;

use crate::chain::ChainConnection;
use crate::clock::{ChainClock, PHASE_GRACE_BLOCKS};
use crate::epoch_loop::{ConsensusConfig, ConsensusLoop, DutiesWrapper, Hosting};
use crate::error::{NodeError, NodeResult};
use crate::evidence::{Filing, file_evidence};
use crate::heads::HeadFollower;
use crate::overview::{ChainOverview, ConsensusMetrics, watch_settlements};
use crate::reach::{Reach, keep_reachable, make_reachable};
use crate::running::RunningNode;
use crate::schemas::with_consensus_schemas;
use crate::stake::ChainStake;
use crate::tasks::TaskManager;

/// How long a node waits at start for its bootstrap peers to answer, so
/// its first DHT reads see the swarm.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(5);

/// Longest a hoster choosing the weakest span waits for the swarm it
/// joins to show an announcement (a lone server announces only once this
/// node has joined it, which can take seconds on a loaded machine).
const ANNOUNCEMENT_WAIT: Duration = Duration::from_secs(10);

/// Pause between two reads of the announcements meanwhile.
const ANNOUNCEMENT_POLL: Duration = Duration::from_millis(200);

/// Which blocks a hoster serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpanChoice {
    /// Exactly these.
    Blocks(Range<usize>),
    /// This many consecutive blocks (at least 1; the whole model if it has
    /// fewer) where the announced servers give the least throughput.
    Weakest(usize),
}

/// What a node serves besides consensus.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Blocks to serve.
    pub blocks: SpanChoice,
    /// Bytes of KV cache all sessions together may hold.
    pub cache_bytes: usize,
    /// Throughput to announce instead of measuring it.
    pub throughput: Option<f64>,
    /// Honest serving (`None`), or a deliberate corruption of what is
    /// served, for tests of verified serving.
    pub fault: Option<ServingFault>,
}

/// Everything [`NodeBuilder`] needs: what the node is and does.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's identity; also its hotkey on chain.
    pub keypair: Keypair,
    /// The subnet.
    pub subnet: SubnetId,
    /// The chain's RPC URL (`ws://…` or `http://…`). With it, proof of
    /// stake guards the DHT and the chain's epoch its phase windows;
    /// without it every peer is admitted and there is no consensus.
    pub chain_url: Option<String>,
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
    /// does not). Needs a chain.
    pub consensus: bool,
    /// Keep a swarm client (embedding, head, tokenizer) to run
    /// generations through the swarm; implied by `api`.
    pub swarm_client: bool,
    /// Have the swarm client relay every hidden state itself instead of
    /// the servers pushing them to each other (see `ClientConfig::push`).
    pub relay: bool,
    /// Share of the swarm client's sequences spot-checked (see
    /// `ClientConfig::check_rate`).
    pub check_rate: f64,
    /// Seed of the spot checks' draws (`None`: from the OS).
    pub check_seed: Option<u64>,
    /// Serve the OpenAI-compatible API here (a gateway).
    pub api: Option<SocketAddr>,
    /// The API's limits (connections, bodies, timeouts, queue).
    pub api_config: ApiConfig,
    /// Trained prompts the API serves beside the model, each as the model
    /// id `<model>:<name>`.
    pub tunings: Tunings,
    /// Honest consensus duties (`None`), or a wrapper over them making
    /// the node faulty, for tests.
    pub wrap_duties: Option<DutiesWrapper>,
    /// Where the node's metrics are registered (P2P, serving, client,
    /// consensus, API); `/metrics` of its API or `metrics_addr` serves it.
    pub metrics: MetricsRegistry,
    /// Serve `/metrics`, `/health` and `/ready` here (a node without an
    /// API; a gateway serves them with its API).
    pub metrics_addr: Option<SocketAddr>,
}

impl NodeOptions {
    /// An honest consensus node of `subnet` following the chain at
    /// `chain_url`, with no span and no API, listening on an ephemeral
    /// loopback port.
    pub fn new(keypair: Keypair, subnet: SubnetId, chain_url: &str, model_path: PathBuf) -> Self {
        let mut options = NodeOptions::without_chain(keypair, subnet, model_path);
        options.chain_url = Some(chain_url.to_string());
        options.consensus = true;
        options
    }

    /// A node of `subnet` without a chain (every peer admitted, no
    /// consensus), with no span and no API, listening on an ephemeral
    /// loopback port.
    pub fn without_chain(keypair: Keypair, subnet: SubnetId, model_path: PathBuf) -> Self {
        NodeOptions {
            keypair,
            subnet,
            chain_url: None,
            model_path,
            model_name: "smollm2".to_string(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")],
            announce: Vec::new(),
            bootstrap: Vec::new(),
            host: None,
            consensus: false,
            swarm_client: false,
            relay: false,
            check_rate: DEFAULT_CHECK_RATE,
            check_seed: None,
            api: None,
            api_config: ApiConfig::default(),
            wrap_duties: None,
            metrics: MetricsRegistry::new(),
            metrics_addr: None,
            tunings: Tunings::default(),
        }
    }
}

/// The chain side of a node: connection, phase clock, record lifetime.
struct ChainParts {
    connection: Arc<ChainConnection>,
    clock: Arc<ChainClock>,
    phases: PhaseParams,
    record_ttl: Duration,
    block_time: Duration,
}

/// Assembles and starts one node from its [`NodeOptions`].
pub struct NodeBuilder {
    options: NodeOptions,
    tasks: TaskManager,
    /// The consensus metrics, once a chain is connected.
    consensus_metrics: Option<ConsensusMetrics>,
}

impl NodeBuilder {
    /// A builder of the node `options` describe.
    pub fn new(options: NodeOptions) -> Self {
        NodeBuilder {
            options,
            tasks: TaskManager::new(),
            consensus_metrics: None,
        }
    }

    /// Starts the node on the current tokio runtime. A node that fails
    /// half-way through leaves nothing running.
    pub async fn start(mut self) -> NodeResult<RunningNode> {
        let options = self.options.clone();
        if options.consensus && options.chain_url.is_none() {
            return Err(NodeError::InvalidConfig(
                "consensus needs a chain: give the chain's URL".into(),
            ));
        }
        let gguf = GgufFile::open(&options.model_path).map_err(|source| NodeError::ModelFile {
            path: options.model_path.clone(),
            source,
        })?;
        let model = gguf.config()?;
        let chain = match &options.chain_url {
            Some(url) => Some(connect_chain(url).await?),
            None => None,
        };

        let (p2p, events, evidence) = self.start_p2p(chain.as_ref(), model.hidden_size).await?;
        let registry = options.metrics.clone();
        registry.register(|r| p2p.metrics().register(r));
        if let Some(chain) = &chain {
            let consensus = ConsensusMetrics::default();
            registry.register(|r| consensus.register(r));
            // Poll twice a block: a settlement is counted within a block.
            let poll = (chain.block_time / 2).max(Duration::from_millis(200));
            self.tasks.spawn_critical(
                "settlements",
                watch_settlements(
                    chain.connection.clone(),
                    options.subnet,
                    consensus.clone(),
                    poll,
                ),
            );
            self.consensus_metrics = Some(consensus);
        }
        if let (Some(inbox), Some(chain)) = (evidence, &chain) {
            self.tasks.spawn_critical(
                "evidence",
                file_evidence(
                    inbox,
                    p2p.clone(),
                    Filing {
                        clock: chain.clock.clone(),
                        phases: chain.phases,
                        stake: Arc::new(ChainStake::new(
                            chain.connection.clone(),
                            options.subnet,
                            NodeClass::Registered,
                        )),
                        model: options.model_name.clone(),
                        hidden_size: model.hidden_size,
                        ttl: chain.record_ttl,
                    },
                ),
            );
        }
        let heads = chain.as_ref().map(|chain| {
            let follower = HeadFollower::new(chain.connection.clone(), chain.clock.clone());
            let heads = follower.subscribe();
            self.tasks.spawn_critical("head-follower", follower.run());
            heads
        });
        if !options.bootstrap.is_empty() {
            p2p.wait_for_peers(BOOTSTRAP_WAIT).await;
        }

        let (server, reach) = match &options.host {
            Some(host) => {
                // Checked before the server announces, so it never
                // announces addresses no one can dial.
                let reach = make_reachable(&p2p, &options.listen, &options.bootstrap).await?;
                let server = self.start_server(host, &gguf, &model, &p2p, events).await?;
                if reach != Reach::Unchecked {
                    let readdress = server.clone();
                    self.tasks.spawn_critical(
                        "reachability",
                        keep_reachable(p2p.clone(), options.bootstrap.clone(), move || {
                            readdress.addresses_changed()
                        }),
                    );
                }
                (Some(server), Some(reach))
            }
            None => {
                drop(events);
                (None, None)
            }
        };

        let (mut status, mut metrics) = (None, None);
        if let (true, Some(chain), Some(heads)) = (options.consensus, &chain, &heads) {
            let hosting = server.as_ref().map(|server| Hosting {
                span: server.shared_span(),
                server: Some(server.clone()),
            });
            let mut consensus = ConsensusConfig::new(
                options.subnet,
                options.keypair.clone(),
                u32::try_from(model.n_blocks)
                    .map_err(|_| NodeError::InvalidConfig("too many blocks".into()))?,
                model.hidden_size,
            );
            consensus.record_ttl = chain.record_ttl;
            consensus.phases = chain.phases;
            consensus.wrap = options.wrap_duties.clone();
            consensus.model = options.model_name.clone();
            consensus.metrics = self.consensus_metrics.clone().unwrap_or_default();
            let consensus_loop = ConsensusLoop::new(
                consensus,
                p2p.clone(),
                chain.connection.clone(),
                chain.clock.clone(),
                heads.clone(),
                hosting,
            )
            .await?;
            status = Some(consensus_loop.status());
            metrics = Some(consensus_loop.metrics());
            self.tasks.spawn_critical("consensus", consensus_loop.run());
        }

        let swarm = match options.swarm_client || options.api.is_some() {
            true => Some(Arc::new(SwarmClient::load(
                &options.model_path,
                p2p.clone(),
                tokio::runtime::Handle::current(),
                ClientConfig {
                    push: !options.relay,
                    check_rate: options.check_rate,
                    check_seed: options.check_seed,
                    ..ClientConfig::new(&options.model_name)
                },
            )?)),
            false => None,
        };
        if let Some(client) = &swarm {
            let client = Arc::downgrade(client);
            registry.register(|r| {
                r.sub_registry_with_prefix("inference")
                    .register_collector(Box::new(ClientCollector::new(move || {
                        client.upgrade().map(|c| c.stats())
                    })))
            });
        }
        let ready = readiness(
            swarm.clone(),
            chain.as_ref().map(|c| c.connection.clone()),
            p2p.clone(),
            !options.bootstrap.is_empty(),
        );
        let api_addr = match (options.api, &swarm) {
            (Some(addr), Some(client)) => {
                let surfaces = Surfaces {
                    metrics: registry.clone(),
                    ready: ready.clone(),
                    chain: chain.as_ref().map(|c| {
                        Arc::new(ChainOverview::new(c.connection.clone(), options.subnet))
                            as Arc<dyn hypertensor_api::ChainView>
                    }),
                };
                Some(self.start_api(addr, client.clone(), surfaces).await?)
            }
            _ => None,
        };
        let metrics_addr = match options.metrics_addr {
            Some(addr) => Some(self.start_metrics(addr, registry, ready).await?),
            None => None,
        };

        Ok(RunningNode {
            p2p,
            server,
            reach,
            status,
            metrics,
            api_addr,
            metrics_addr,
            swarm,
            heads,
            chain: chain.map(|c| c.connection),
            tasks: self.tasks,
        })
    }

    /// The P2P layer, guarded by the chain's stake and phase clock when
    /// there is a chain; its event loop runs as the critical task `p2p`.
    async fn start_p2p(
        &mut self,
        chain: Option<&ChainParts>,
        hidden_size: usize,
    ) -> NodeResult<(Client, mpsc::Receiver<Event>, Option<EvidenceInbox>)> {
        let options = &self.options;
        let mut config = match chain {
            Some(chain) => {
                let genesis = chain.connection.client().await.health().await?.genesis_hash;
                let stake = CachingStakeOracle::new(ChainStake::new(
                    chain.connection.clone(),
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
                config.phase = chain.clock.clone();
                // Writers' clocks differ: accept twice the lifetime they ask for.
                config.schemas = with_consensus_schemas(
                    config.schemas,
                    chain.record_ttl * 2,
                    genesis,
                    &options.model_name,
                    hidden_size,
                );
                config
            }
            None => p2p_config(
                options.keypair.clone(),
                options.subnet,
                H256([0; 32]),
                &options.model_name,
                Arc::new(AdmitAll),
            ),
        };
        config.listen = options.listen.clone();
        config.announce = options.announce.clone();
        config.bootstrap = options.bootstrap.clone();
        // A staked node files the evidence clients hand it.
        let evidence = chain.is_some().then(|| take_evidence(&mut config));
        let (p2p, events, event_loop) = hypertensor_p2p::new(config)?;
        self.tasks.spawn_critical("p2p", event_loop.run());
        Ok((p2p, events, evidence))
    }

    /// Loads the span `host` asks for and serves it as the critical task
    /// `block-server`.
    async fn start_server(
        &mut self,
        host: &HostOptions,
        gguf: &GgufFile,
        model: &ModelConfig,
        p2p: &Client,
        events: mpsc::Receiver<Event>,
    ) -> NodeResult<Arc<BlockServer>> {
        let n_blocks = model.n_blocks;
        let blocks = match &host.blocks {
            SpanChoice::Blocks(blocks) => {
                if blocks.is_empty() || blocks.end > n_blocks {
                    return Err(NodeError::BlocksOutOfRange {
                        start: blocks.start,
                        end: blocks.end,
                        n_blocks,
                    });
                }
                blocks.clone()
            }
            SpanChoice::Weakest(0) => {
                return Err(NodeError::InvalidConfig(
                    "a hoster serves at least 1 block".into(),
                ));
            }
            SpanChoice::Weakest(len) => {
                let servers = self.announced(p2p, n_blocks).await?;
                let spans: Vec<_> = servers
                    .iter()
                    .map(|(_, i)| (i.start as usize, i.end as usize, i.throughput))
                    .collect();
                weakest_span(&spans, n_blocks, *len)
            }
        };
        tracing::info!(
            start = blocks.start,
            end = blocks.end,
            model = %self.options.model_path.display(),
            "loading blocks"
        );
        let span = BlockSpan::load(gguf, blocks)?;
        let mut config = ServerConfig::new(&self.options.model_name);
        config.cache_budget_bytes = host.cache_bytes;
        config.throughput = host.throughput;
        config.fault = host.fault;
        let server = Arc::new(BlockServer::new(span, config)?);
        let collector = ServerCollector::new(&server);
        self.options.metrics.register(|r| {
            r.sub_registry_with_prefix("inference")
                .register_collector(Box::new(collector))
        });
        self.tasks
            .spawn_critical("block-server", server.clone().run(p2p.clone(), events));
        Ok(server)
    }

    /// The servers the swarm announces. Joining through bootstrap peers,
    /// an empty answer is asked again for up to [`ANNOUNCEMENT_WAIT`]: a
    /// lone server announces only once a peer (this node) has joined it.
    async fn announced(
        &self,
        p2p: &Client,
        n_blocks: usize,
    ) -> NodeResult<Vec<(hypertensor_p2p::PeerId, hypertensor_inference::ServerInfo)>> {
        let deadline = tokio::time::Instant::now() + ANNOUNCEMENT_WAIT;
        loop {
            let servers = announced_servers(p2p, &self.options.model_name, n_blocks, 0).await?;
            if !servers.is_empty()
                || self.options.bootstrap.is_empty()
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(servers);
            }
            tokio::time::sleep(ANNOUNCEMENT_POLL).await;
        }
    }

    /// Serves the OpenAI-compatible API at `addr` over the swarm, as the
    /// graceful critical task `api`; returns the address bound.
    async fn start_api(
        &mut self,
        addr: SocketAddr,
        client: Arc<SwarmClient>,
        surfaces: Surfaces,
    ) -> NodeResult<SocketAddr> {
        let backend = SwarmBackend::new(&self.options.model_name, client)
            .with_tunings(self.options.tunings.clone())
            .map_err(|e| NodeError::InvalidConfig(e.to_string()))?;
        let backend = Arc::new(backend);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Listen { addr, source })?;
        let bound = listener.local_addr()?;
        let config = self.options.api_config.clone();
        self.tasks
            .spawn_graceful("api", move |shutdown| async move {
                hypertensor_api::serve_with(listener, backend, &config, surfaces, shutdown.wait())
                    .await
            });
        Ok(bound)
    }

    /// Serves `/metrics`, `/health` and `/ready` at `addr` as the graceful
    /// critical task `metrics`; returns the address bound.
    async fn start_metrics(
        &mut self,
        addr: SocketAddr,
        registry: MetricsRegistry,
        ready: ReadyCheck,
    ) -> NodeResult<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Listen { addr, source })?;
        let bound = listener.local_addr()?;
        let router = hypertensor_http::observe::routes(registry, ready);
        self.tasks
            .spawn_graceful("metrics", move |shutdown| async move {
                hypertensor_http::serve(
                    listener,
                    router,
                    hypertensor_http::ConnectionLimits {
                        max_connections: 64,
                        max_per_address: 16,
                        header_timeout: Duration::from_secs(10),
                    },
                    |refusal| refusal.reason.clone(),
                    shutdown.wait(),
                )
                .await
            });
        Ok(bound)
    }
}

/// What `/ready` of a node means: it has peers (when it was given some to
/// join), its chain answers (when it has one), and a gateway's swarm has
/// a route through every block.
fn readiness(
    swarm: Option<Arc<SwarmClient>>,
    chain: Option<Arc<ChainConnection>>,
    p2p: Client,
    joins_peers: bool,
) -> ReadyCheck {
    Arc::new(move || {
        let (swarm, chain, p2p) = (swarm.clone(), chain.clone(), p2p.clone());
        Box::pin(async move {
            if joins_peers && p2p.metrics().peers() == 0 {
                return Err("no peer connected".to_string());
            }
            if let Some(chain) = chain {
                let client = chain.client().await;
                match tokio::time::timeout(READY_CHAIN_TIMEOUT, client.health()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("the chain does not answer: {e}")),
                    Err(_) => return Err("the chain does not answer in time".to_string()),
                }
            }
            if let Some(swarm) = swarm {
                let view = tokio::time::timeout(READY_SWARM_TIMEOUT, swarm.swarm_json())
                    .await
                    .map_err(|_| "the swarm could not be read in time".to_string())?
                    .map_err(|e| e.to_string())?;
                if view["complete"] != serde_json::Value::Bool(true) {
                    return Err("no server covers some of the model's blocks".to_string());
                }
            }
            Ok(())
        })
    })
}

/// Longest `/ready` waits for the chain to answer.
const READY_CHAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest `/ready` waits for the swarm's announcements.
const READY_SWARM_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to the chain and reads what the DHT's validators need.
async fn connect_chain(url: &str) -> NodeResult<ChainParts> {
    let connection =
        ChainConnection::connect(url)
            .await
            .map_err(|source| NodeError::ChainUnreachable {
                url: url.to_string(),
                source,
            })?;
    let rpc = connection.client().await;
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
    Ok(ChainParts {
        connection,
        clock,
        phases,
        record_ttl,
        block_time: Duration::from_millis(params.block_time_ms.max(1)),
    })
}
