//! Builds networks of real nodes on loopback.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hypertensor_p2p::{
    CachingStakeOracle, Client, Config, Event, KeySchema, Multiaddr, PeerId, PhaseClock,
    SchemaRegistry, StakeSet, record::peer_id_of,
};
use hypertensor_primitives::{H256, Keypair};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub(crate) const GENESIS: H256 = H256([7; 32]);
pub(crate) const MAX_TTL: Duration = Duration::from_secs(60);

/// Epoch 1 forever; keys under `closed/` are never writable.
pub(crate) struct TestPhase;

impl PhaseClock for TestPhase {
    fn epoch(&self) -> u64 {
        1
    }
    fn may_write(&self, key: &str) -> bool {
        !key.starts_with("closed/")
    }
}

pub(crate) fn schemas() -> SchemaRegistry {
    SchemaRegistry::new()
        .register(KeySchema::bytes("open/", 1024, MAX_TTL))
        .register(KeySchema::bytes("small/", 8, MAX_TTL))
        .register(KeySchema::bytes("closed/", 1024, MAX_TTL))
}

pub(crate) fn key(name: &str) -> Keypair {
    Keypair::dev(name)
}

pub(crate) struct Node {
    pub(crate) client: Client,
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) addr: Multiaddr,
    task: JoinHandle<()>,
}

impl Node {
    pub(crate) fn peer_id(&self) -> PeerId {
        self.client.peer_id()
    }
    /// Leaves the network: stops the event loop (connections close).
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The staked set: `node0..node{n}` plus the named extra writers.
pub(crate) fn stake_set(n: usize, extra: &[&str]) -> StakeSet {
    let mut set: HashSet<PeerId> = (0..n)
        .map(|i| peer_id_of(&key(&format!("node{i}"))))
        .collect();
    set.extend(extra.iter().map(|name| peer_id_of(&key(name))));
    StakeSet(set)
}

pub(crate) fn config(name: &str, stake: StakeSet) -> Config {
    let mut cfg = Config::new(
        key(name),
        1,
        GENESIS,
        schemas(),
        Arc::new(TestPhase),
        Arc::new(CachingStakeOracle::new(stake)),
    );
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    cfg
}

pub(crate) async fn spawn(cfg: Config) -> Node {
    let (client, events, event_loop) = hypertensor_p2p::new(cfg).unwrap();
    let task = tokio::spawn(event_loop.run());
    let listen = client.listen_addrs().await.unwrap();
    let addr = listen[0].clone().with_p2p(client.peer_id()).unwrap();
    Node {
        client,
        events,
        addr,
        task,
    }
}

/// `n` nodes named `node0..`, all bootstrapped from node0, each with at
/// least `min(n - 1, 8)` routing-table entries. `tweak` adjusts configs.
pub(crate) async fn network(n: usize, stake: &StakeSet, tweak: impl Fn(&mut Config)) -> Vec<Node> {
    let mut cfg = config("node0", stake.clone());
    tweak(&mut cfg);
    let first = spawn(cfg).await;
    let boot = first.addr.clone();
    let mut nodes = vec![first];
    for i in 1..n {
        let mut cfg = config(&format!("node{i}"), stake.clone());
        cfg.bootstrap = vec![boot.clone()];
        tweak(&mut cfg);
        nodes.push(spawn(cfg).await);
    }
    let want = (n - 1).min(8);
    wait_for(Duration::from_secs(10), || async {
        for node in &nodes {
            if node.client.routing_table_size().await.unwrap() < want {
                return false;
            }
        }
        true
    })
    .await;
    nodes
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`.
pub(crate) async fn wait_for<F, Fut>(limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
