//! The node: configuration, shared state, the block producer and the
//! service lifecycle.
//!
//! [`Node::start`] opens the store (checking the state root), binds the RPC
//! listener and spawns two tasks: the RPC server and the block producer.
//! Every `block_time` the producer builds a block on the best state from
//! the pool's ready extrinsics (empty blocks too: epochs advance by
//! height), commits it in one redb transaction, then publishes the new
//! state and header. A block is visible over RPC only after its commit
//! returned, so every block a client has seen survives `kill -9`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hypertensor_chain_client::HeaderInfo;
use hypertensor_primitives::{AccountId, H256, Keypair};
use hypertensor_runtime::{BlockBuilder, GenesisConfig, State};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::pool::{Pool, PoolConfig};
use crate::rpc::{self, RateLimiter};
use crate::store::Store;
use crate::{Error, Result};

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
    /// Interval between blocks; `None` takes the genesis parameter
    /// `block_time_ms`.
    pub block_time: Option<Duration>,
    /// Account credited with the author share of subsidy and fees.
    pub author: AccountId,
    /// RPC limits.
    pub rpc: RpcLimits,
    /// The transaction pool's limits.
    pub pool: PoolConfig,
}

impl ChainConfig {
    /// The development chain: [`GenesisConfig::dev`] at the block time of
    /// its parameters, authored by `alice`, RPC on `rpc_addr`.
    pub fn dev(base_path: PathBuf, rpc_addr: SocketAddr) -> ChainConfig {
        ChainConfig {
            base_path,
            rpc_addr,
            block_time: None,
            genesis: GenesisConfig::dev(),
            author: Keypair::dev("alice").account_id(),
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
}

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
    rpc_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<()>>,
    producer: JoinHandle<Result<()>>,
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
    /// the state root), binds the RPC server and starts producing blocks.
    pub async fn start(config: ChainConfig) -> Result<Node> {
        let block_time = config
            .block_time
            .unwrap_or(Duration::from_millis(config.genesis.params.block_time_ms));
        if block_time.is_zero() {
            return Err(Error::Config("block time must be positive".into()));
        }
        let genesis = config.genesis.build()?;
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
        let shared = Arc::new(Shared {
            state: RwLock::new(Arc::new(state)),
            pool: Mutex::new(Pool::new(config.pool.clone())),
            store,
            heads,
            rate: RateLimiter::new(config.rpc.requests_per_second, config.rpc.burst),
            connections: Arc::new(tokio::sync::Semaphore::new(config.rpc.max_connections)),
            limits: config.rpc.clone(),
            stopping: stop.clone(),
        });
        let server = tokio::spawn(rpc::serve(Arc::clone(&shared), listener, stop.clone()));
        let producer = tokio::spawn(produce_blocks(
            Arc::clone(&shared),
            config.author,
            block_time,
            stop,
        ));
        tracing::info!(%rpc_addr, "JSON-RPC listening (HTTP and WebSocket)");
        Ok(Node {
            shared,
            rpc_addr,
            shutdown,
            server,
            producer,
        })
    }

    /// The address the RPC server listens on.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
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
            r = &mut self.producer => flatten(r, "block producer"),
        };
        let _ = self.shutdown.send(true);
        let max = self.shared.limits.max_connections;
        let connections = Arc::clone(&self.shared.connections);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = (&mut self.server).await;
            let _ = (&mut self.producer).await;
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The producer loop: one block per tick until shutdown. A storage failure
/// stops the node (it must not run ahead of its disk).
async fn produce_blocks(
    shared: Arc<Shared>,
    author: AccountId,
    block_time: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut ticks = tokio::time::interval(block_time);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let shared2 = Arc::clone(&shared);
        let head = tokio::task::spawn_blocking(move || produce_one(&shared2, author))
            .await
            .map_err(|e| Error::Panicked {
                what: "block production".into(),
                reason: e.to_string(),
            })??;
        // No receivers is fine.
        let _ = shared.heads.send(head);
    }
}

/// Builds, commits and publishes one block; returns its header as JSON.
pub(crate) fn produce_one(shared: &Shared, author: AccountId) -> Result<Arc<str>> {
    let started = std::time::Instant::now();
    let parent = shared.state();
    let timestamp = now_ms().max(parent.timestamp_ms());
    let mut builder = BlockBuilder::new(&parent, author, timestamp)?;
    let dropped = shared.pool().build_block(&mut builder);
    let built = builder.finish();
    shared
        .store
        .commit_block(&built.block, &built.events, &built.state)?;
    let info = HeaderInfo {
        hash: built.block.hash(),
        header: built.block.header.clone(),
    };
    let count = built.block.extrinsics.len();
    let new_state = Arc::new(built.state);
    let revalidated = {
        let mut pool = shared.pool();
        match shared.state.write() {
            Ok(mut guard) => *guard = Arc::clone(&new_state),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&new_state),
        }
        pool.revalidate(&new_state)
    };
    tracing::info!(
        height = info.header.height,
        hash = %info.hash,
        extrinsics = count,
        dropped,
        used = revalidated.used,
        unaffordable = revalidated.unaffordable,
        expired = revalidated.expired,
        ms = started.elapsed().as_millis() as u64,
        "block committed"
    );
    let json = serde_json::to_string(&info)
        .map_err(|e| Error::Corrupt(format!("cannot encode header: {e}")))?;
    Ok(json.into())
}
