//! The node: configuration, shared state, consensus and the service
//! lifecycle.
//!
//! [`Node::start`] opens the store (checking the state root), binds the RPC
//! listener, and starts the RPC server and consensus: the genesis
//! validators finalize every block with simplex BFT (`hypertensor-bft`);
//! a one-validator chain (`--dev`) runs the same code with a quorum of
//! one. The round's leader builds a block on its parent from the pool's
//! ready extrinsics (empty blocks too: epochs advance by height) no
//! sooner than `block_time` after the parent; every validator executes it
//! before voting. Only a finalized block is committed (one redb
//! transaction) and published, so every block a client has seen is final
//! and survives `kill -9`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hypertensor_bft::{ChainBlock, ConsensusThread, Evidence, Executed, Host, ProcessConfig};
use hypertensor_chain_client::HeaderInfo;
use hypertensor_primitives::{AccountId, H256, Keypair};
use hypertensor_runtime::{BlockBuilder, BuiltBlock, GenesisConfig, State};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::pool::{Pool, PoolConfig};
use crate::rpc::{self, RateLimiter};
use crate::store::Store;
use crate::{Error, Result};
use hypertensor_http::observe::MetricsRegistry;

/// Limits of the RPC server (defaults and reasons in `docs/chain.md`).
#[derive(Clone, Debug)]
pub struct RpcLimits {
    /// Largest request body (HTTP) or message (WebSocket), bytes.
    pub max_request_bytes: usize,
    /// Most requests in one JSON-RPC batch.
    pub max_batch: usize,
    /// Sustained calls per second per client IP address (a batch counts
    /// as its number of calls).
    pub requests_per_second: u32,
    /// Calls a client may send at once before the rate applies.
    pub burst: u32,
    /// Most simultaneous connections (HTTP and WebSocket) in all, and most
    /// WebSocket connections.
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Most subscriptions per WebSocket connection.
    pub max_subscriptions_per_connection: usize,
    /// A WebSocket connection without a live subscription that sends
    /// nothing (not even a ping) for this long is closed.
    pub ws_idle_timeout: Duration,
    /// Longest time to receive a request head (also closes idle
    /// keep-alive HTTP connections).
    pub header_timeout: Duration,
    /// Longest time to receive a request body.
    pub body_timeout: Duration,
}

impl Default for RpcLimits {
    fn default() -> RpcLimits {
        RpcLimits {
            max_request_bytes: 256 * 1024,
            max_batch: 64,
            requests_per_second: 20_000,
            burst: 40_000,
            max_connections: 1024,
            max_connections_per_ip: 64,
            max_subscriptions_per_connection: 16,
            ws_idle_timeout: Duration::from_secs(120),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct ChainConfig {
    /// Directory of the database.
    pub base_path: PathBuf,
    /// Address of the JSON-RPC server (HTTP and WebSocket on one port);
    /// port 0 picks a free one (see [`Node::rpc_addr`]).
    pub rpc_addr: SocketAddr,
    /// The chain's genesis.
    pub genesis: GenesisConfig,
    /// Least interval between blocks; `None` takes the genesis parameter
    /// `block_time_ms`.
    pub block_time: Option<Duration>,
    /// This validator's key: one of the genesis validators. It signs
    /// votes, and its account is paid the author share of the blocks it
    /// proposes.
    pub validator_key: Keypair,
    /// The P2P socket between validators; `None` listens on this
    /// validator's genesis address.
    pub p2p_addr: Option<SocketAddr>,
    /// Run as a full node instead of a validator: follow the finalized
    /// blocks of the validators at these RPC URLs (comma-separated,
    /// failing over), verifying each finalization certificate against
    /// the genesis validators, and serve RPC. `validator_key` and
    /// `p2p_addr` are then unused.
    pub follow: Option<String>,
    /// RPC limits.
    pub rpc: RpcLimits,
    /// The transaction pool's limits.
    pub pool: PoolConfig,
}

impl ChainConfig {
    /// The development chain: [`GenesisConfig::dev`] at the block time of
    /// its parameters, `alice` its one validator, RPC on `rpc_addr`.
    pub fn dev(base_path: PathBuf, rpc_addr: SocketAddr) -> ChainConfig {
        ChainConfig {
            base_path,
            rpc_addr,
            block_time: None,
            genesis: GenesisConfig::dev(),
            validator_key: Keypair::dev("alice"),
            p2p_addr: None,
            follow: None,
            rpc: RpcLimits::default(),
            pool: PoolConfig::default(),
        }
    }
}

/// State shared by the producer and the RPC server.
pub(crate) struct Shared {
    pub(crate) state: RwLock<Arc<State>>,
    pub(crate) pool: Mutex<Pool>,
    pub(crate) store: Store,
    /// New heads, as `HeaderInfo` JSON.
    pub(crate) heads: broadcast::Sender<Arc<str>>,
    pub(crate) limits: RpcLimits,
    pub(crate) rate: RateLimiter,
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    /// Turns true at shutdown (WebSocket connections outlive the HTTP
    /// server's graceful shutdown, so they watch this themselves).
    pub(crate) stopping: watch::Receiver<bool>,
    /// Highest height consensus has finalized (the committed height can
    /// trail it while blocks are fetched and committed).
    pub(crate) finalized_tip: std::sync::atomic::AtomicU64,
    /// Transactions submitted here, for the other validators' pools.
    pub(crate) gossip: tokio::sync::mpsc::Sender<Vec<u8>>,
    /// Finalization certificates of recent blocks (block hash, encoded),
    /// newest last (at most [`MAX_EVIDENCE`]).
    pub(crate) certificates: Mutex<std::collections::VecDeque<(H256, Vec<u8>)>>,
    /// Conflicting votes seen, newest last (at most [`MAX_EVIDENCE`]).
    pub(crate) evidence: Mutex<std::collections::VecDeque<Evidence>>,
    /// Block import and RPC latency, observed as they happen.
    pub(crate) metrics: crate::metrics::ChainMetrics,
}

/// Submitted transactions waiting to be sent to the other validators
/// (beyond it they are not gossiped; they still reach blocks this
/// validator proposes).
const GOSSIP_QUEUE: usize = 4096;

/// Most evidence records a node keeps.
pub const MAX_EVIDENCE: usize = 1024;

impl Shared {
    /// The best state.
    pub(crate) fn state(&self) -> Arc<State> {
        match self.state.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub(crate) fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running chain node.
pub struct Node {
    shared: Arc<Shared>,
    registry: MetricsRegistry,
    rpc_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<()>>,
    driver: Driver,
    role: String,
}

/// What advances the node's chain.
enum Driver {
    /// A validator's consensus.
    Validator(ConsensusThread),
    /// A full node's follower of the validators' finalized blocks.
    Follower(JoinHandle<Result<()>>),
}

impl Driver {
    /// Resolves when it stops on its own (always a failure).
    async fn wait(&mut self) -> Error {
        match self {
            Driver::Validator(consensus) => Error::Consensus(consensus.wait().await.to_string()),
            Driver::Follower(task) => match task.await {
                Ok(Ok(())) => Error::Stopped {
                    what: "the follower".into(),
                },
                Ok(Err(e)) => e,
                Err(e) => Error::Panicked {
                    what: "the follower".into(),
                    reason: e.to_string(),
                },
            },
        }
    }

    async fn stop(self) {
        match self {
            Driver::Validator(consensus) => consensus.stop().await,
            Driver::Follower(task) => {
                // It watches the shutdown signal; give it a moment.
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            }
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("rpc_addr", &self.rpc_addr)
            .finish()
    }
}

impl Node {
    /// Opens the store (creating the genesis, or reloading and checking
    /// the state root), binds the RPC server and starts consensus.
    pub async fn start(config: ChainConfig) -> Result<Node> {
        let block_time = config
            .block_time
            .unwrap_or(Duration::from_millis(config.genesis.params.block_time_ms));
        if block_time.is_zero() {
            return Err(Error::Config("block time must be positive".into()));
        }
        let genesis = config.genesis.build()?;
        let genesis_block = ChainBlock::new(genesis.block.clone());
        let validators = genesis.state.chain_validators().to_vec();
        let base = config.base_path.clone();
        let (store, state) = tokio::task::spawn_blocking(move || Store::open(&base, &genesis))
            .await
            .map_err(|e| Error::Panicked {
                what: "opening the store".into(),
                reason: e.to_string(),
            })??;
        tracing::info!(
            height = state.height(),
            best = %state.best_hash(),
            genesis = %state.genesis_hash(),
            path = %store.path().display(),
            "chain state loaded, state root verified"
        );
        let listener = tokio::net::TcpListener::bind(config.rpc_addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", config.rpc_addr), e))?;
        let rpc_addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the RPC address", e))?;
        let (heads, _) = broadcast::channel(256);
        let (shutdown, stop) = watch::channel(false);
        let (gossip, outgoing) = tokio::sync::mpsc::channel(GOSSIP_QUEUE);
        let shared = Arc::new(Shared {
            state: RwLock::new(Arc::new(state)),
            pool: Mutex::new(Pool::new(config.pool.clone())),
            store,
            heads,
            rate: RateLimiter::new(config.rpc.requests_per_second, config.rpc.burst),
            connections: Arc::new(tokio::sync::Semaphore::new(config.rpc.max_connections)),
            limits: config.rpc.clone(),
            stopping: stop.clone(),
            finalized_tip: std::sync::atomic::AtomicU64::new(0),
            gossip,
            certificates: Mutex::new(std::collections::VecDeque::new()),
            evidence: Mutex::new(std::collections::VecDeque::new()),
            metrics: crate::metrics::ChainMetrics::default(),
        });
        let registry = MetricsRegistry::new();
        registry.register(|r| shared.metrics.register(r, Arc::downgrade(&shared)));
        let (driver, role) = if let Some(urls) = &config.follow {
            let verifier =
                hypertensor_bft::FinalityVerifier::new(&shared.state().genesis_hash(), &validators)
                    .map_err(|e| Error::Config(e.to_string()))?;
            let task = tokio::spawn(crate::follower::follow(
                Arc::clone(&shared),
                urls.clone(),
                verifier,
                outgoing,
                stop.clone(),
            ));
            (
                Driver::Follower(task),
                format!("full node following {urls}"),
            )
        } else {
            let consensus = ConsensusThread::spawn(
                ProcessConfig {
                    key: config.validator_key.clone(),
                    validators,
                    genesis: genesis_block,
                    listen: config.p2p_addr,
                    storage_dir: config.base_path.join("consensus"),
                    block_time,
                    block_codec: hypertensor_bft::BlockCodec::default(),
                },
                Arc::new(ChainHost {
                    shared: Arc::clone(&shared),
                }),
                outgoing,
            )
            .map_err(|e| Error::Config(e.to_string()))?;
            let role = format!(
                "validator {} (P2P {})",
                config.validator_key.account_id(),
                consensus.listen_addr()
            );
            (Driver::Validator(consensus), role)
        };
        let server = tokio::spawn(rpc::serve(
            Arc::clone(&shared),
            listener,
            registry.clone(),
            stop.clone(),
        ));
        tracing::info!(%rpc_addr, "JSON-RPC listening (HTTP and WebSocket)");
        Ok(Node {
            shared,
            registry,
            rpc_addr,
            shutdown,
            server,
            driver,
            role,
        })
    }

    /// The address the RPC server listens on.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// The node's metrics, as `GET /metrics` on the RPC port serves them.
    pub fn metrics(&self) -> MetricsRegistry {
        self.registry.clone()
    }

    /// What this node is: a validator (its account and P2P socket) or a
    /// full node (whom it follows).
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The chain's genesis hash.
    pub fn genesis_hash(&self) -> H256 {
        self.shared.state().genesis_hash()
    }

    /// The best state.
    pub fn best_state(&self) -> Arc<State> {
        self.shared.state()
    }

    /// Runs until `stop` resolves (then shuts down gracefully) or a task
    /// fails (then returns its error).
    pub async fn run_until(mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let result = tokio::select! {
            () = stop => Ok(()),
            r = &mut self.server => flatten(r, "RPC server"),
            e = self.driver.wait() => Err(e),
        };
        let _ = self.shutdown.send(true);
        self.driver.stop().await;
        let max = self.shared.limits.max_connections;
        let connections = Arc::clone(&self.shared.connections);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = (&mut self.server).await;
            // Every WebSocket connection gone: the database is released
            // when `self` drops below.
            while connections.available_permits() < max {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        result
    }

    /// Stops the node gracefully.
    pub async fn stop(self) -> Result<()> {
        self.run_until(async {}).await
    }
}

fn flatten(r: std::result::Result<Result<()>, tokio::task::JoinError>, what: &str) -> Result<()> {
    match r {
        Ok(Ok(())) => Err(Error::Stopped {
            what: what.to_string(),
        }),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(Error::Panicked {
            what: what.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// The chain node as consensus sees it: the finalized state, the pool,
/// and the store that finalized blocks are committed to.
struct ChainHost {
    shared: Arc<Shared>,
}

impl Host for ChainHost {
    fn finalized(&self) -> Arc<State> {
        self.shared.state()
    }

    fn build(
        &self,
        parent: &State,
        author: AccountId,
        timestamp_ms: u64,
    ) -> hypertensor_runtime::Result<BuiltBlock> {
        let mut builder = BlockBuilder::new(parent, author, timestamp_ms)?;
        self.shared.pool().build_block(&mut builder);
        Ok(builder.finish())
    }

    fn commit(&self, block: &ChainBlock, executed: &Executed) -> std::result::Result<(), String> {
        commit_finalized(&self.shared, block, executed).map_err(|e| e.to_string())
    }

    fn finalized_tip(&self, height: u64) {
        self.shared
            .finalized_tip
            .fetch_max(height, std::sync::atomic::Ordering::Relaxed);
    }

    fn gossiped(&self, from: &AccountId, transaction: &[u8]) {
        let xt: hypertensor_runtime::Extrinsic = match serde_json::from_slice(transaction) {
            Ok(xt) => xt,
            Err(e) => {
                tracing::debug!(%from, error = %e, "gossiped transaction is not an extrinsic");
                return;
            }
        };
        let state = self.shared.state();
        let result = crate::pool::Pool::check(&state, xt)
            .and_then(|checked| self.shared.pool().insert(checked));
        if let Err(e) = result {
            tracing::debug!(%from, error = %e, "gossiped transaction not pooled");
        }
    }

    fn verified(&self, extrinsic: &H256) -> bool {
        self.shared.pool().contains(extrinsic)
    }

    fn finalization(&self, hash: H256, certificate: Vec<u8>) {
        keep_recent(&self.shared.certificates, (hash, certificate));
    }

    fn evidence(&self, evidence: Evidence) {
        keep_recent(&self.shared.evidence, evidence);
    }
}

/// Appends `item`, dropping the oldest beyond [`MAX_EVIDENCE`].
fn keep_recent<T>(kept: &Mutex<std::collections::VecDeque<T>>, item: T) {
    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() >= MAX_EVIDENCE {
        kept.pop_front();
    }
    kept.push_back(item);
}

/// Commits a finalized block, then publishes its state and header.
pub(crate) fn commit_finalized(
    shared: &Shared,
    block: &ChainBlock,
    executed: &Executed,
) -> Result<()> {
    let started = std::time::Instant::now();
    let raw = block.block();
    shared
        .store
        .commit_block(raw, &executed.events, &executed.state)?;
    let info = HeaderInfo {
        hash: block.hash(),
        header: raw.header.clone(),
    };
    let new_state = Arc::clone(&executed.state);
    let revalidated = {
        let mut pool = shared.pool();
        match shared.state.write() {
            Ok(mut guard) => *guard = Arc::clone(&new_state),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&new_state),
        }
        pool.revalidate(&new_state)
    };
    shared
        .finalized_tip
        .fetch_max(info.header.height, std::sync::atomic::Ordering::Relaxed);
    shared
        .metrics
        .block_import
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        height = info.header.height,
        hash = %info.hash,
        author = %info.header.author,
        extrinsics = raw.extrinsics.len(),
        used = revalidated.used,
        unaffordable = revalidated.unaffordable,
        expired = revalidated.expired,
        ms = started.elapsed().as_millis() as u64,
        "block finalized"
    );
    let json = serde_json::to_string(&info)
        .map_err(|e| Error::Corrupt(format!("cannot encode header: {e}")))?;
    // No receivers is fine.
    let _ = shared.heads.send(json.into());
    Ok(())
}
