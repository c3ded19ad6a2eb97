//! End-to-end proof of stake against a real chain node in its own process:
//! its JSON-RPC server on a real port, queried by the chain client through a
//! [`StakeLookup`].
//!
//! Cargo gives a crate's tests only that crate's binaries, so the node
//! process is this test binary re-run with `--ignored` on one entry point,
//! [`chain_node_process`], which runs the real `hypertensor_chain::Node`
//! (what `hypertensor chain` runs) until it is killed.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hypertensor_chain::client::Client as ChainClient;
use hypertensor_chain::{ChainConfig, Node as ChainNode};
use hypertensor_p2p::{
    CachingStakeOracle, Config, P2pError, PeerId, Refusal, RejectKind, RejectReason, SignedEntry,
    StakeLookup, now_ms,
};
use hypertensor_primitives::{Keypair, TENSOR};
use hypertensor_runtime::NodeClass;
use hypertensor_runtime::genesis::{GenesisNode, GenesisSubnet};

use crate::harness::{GENESIS, TestPhase, key, schemas, spawn, wait_for};

/// Proof of stake as the chain answers it: a registered node of the subnet.
struct ChainStake {
    client: ChainClient,
    subnet: u32,
}

impl StakeLookup for ChainStake {
    fn lookup(&self, peer: PeerId) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            let peer = hypertensor_primitives::PeerId::from_bytes(&peer.to_bytes())
                .map_err(|e| e.to_string())?;
            self.client
                .proof_of_stake(self.subnet, &peer, NodeClass::Registered)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

fn genesis_node(owner: &str, node: &str) -> GenesisNode {
    GenesisNode {
        owner: Keypair::dev(owner).account_id(),
        hotkey: Keypair::dev(owner).account_id(),
        peer_id: Keypair::dev(node).peer_id(),
        client_peer_id: None,
        stake: 1_000 * TENSOR,
        class: NodeClass::Validator,
    }
}

/// Where the child process prints its RPC address.
const RPC_LINE: &str = "HT-CHAIN-RPC ";
/// The child's database directory.
const DIR_ENV: &str = "HT_P2P_CHAIN_NODE_DIR";

fn chain_config(dir: std::path::PathBuf) -> ChainConfig {
    let mut chain_config = ChainConfig::dev(dir, "127.0.0.1:0".parse().unwrap());
    chain_config.genesis.subnets.push(GenesisSubnet {
        name: "p2p-test".into(),
        model: "model".into(),
        owner: Keypair::dev("alice").account_id(),
        min_stake: 100 * TENSOR,
        max_stake: 10_000 * TENSOR,
        active: false,
        nodes: vec![
            genesis_node("alice", "node0"),
            genesis_node("bob", "node1"),
            genesis_node("charlie", "node2"),
        ],
    });
    chain_config
}

/// The chain node process (run only as a child of the test below).
#[test]
#[ignore = "entry point of the chain node child process"]
fn chain_node_process() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let chain = ChainNode::start(chain_config(dir.into())).await.unwrap();
        println!("{RPC_LINE}{}", chain.rpc_addr());
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        // Runs until the parent kills the process.
        std::future::pending::<()>().await;
    });
}

/// The child process, killed when dropped.
struct ChainProcess(std::process::Child);

impl Drop for ChainProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_chain_process(dir: &std::path::Path) -> (ChainProcess, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "chain::chain_node_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(DIR_ENV, dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = ChainProcess(child);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix(RPC_LINE) {
            return (process, format!("ws://{addr}"));
        }
    }
    panic!("the chain node process exited without serving RPC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_registered_writers_are_accepted_and_others_refused() {
    let dir = std::env::temp_dir().join(format!("hypertensor-p2p-pos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (chain, url) = start_chain_process(&dir);

    let mut nodes = Vec::new();
    for name in ["node0", "node1", "node2", "mallory"] {
        let lookup = ChainStake {
            client: ChainClient::connect(&url).await.unwrap(),
            subnet: 1,
        };
        let mut cfg = Config::new(
            key(name),
            1,
            GENESIS,
            schemas(),
            Arc::new(TestPhase),
            Arc::new(CachingStakeOracle::new(lookup)),
        );
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        if let Some(first) = nodes.first() {
            let first: &crate::harness::Node = first;
            cfg.bootstrap = vec![first.addr.clone()];
        }
        nodes.push(spawn(cfg).await);
    }
    wait_for(Duration::from_secs(10), || async {
        for n in &nodes {
            if n.client.routing_table_size().await.unwrap() < 3 {
                return false;
            }
        }
        true
    })
    .await;

    // A registered node's write is accepted everywhere.
    nodes[1]
        .client
        .store("open/pos", b"registered".to_vec(), now_ms() + 20_000)
        .await
        .unwrap();
    let dict = nodes[2].client.get("open/pos").await.unwrap();
    assert_eq!(dict.get(&nodes[1].peer_id()).unwrap().value, b"registered");

    // The unregistered peer is refused locally and by every holder.
    assert!(matches!(
        nodes[3]
            .client
            .store("open/pos", b"intruder".to_vec(), now_ms() + 20_000)
            .await,
        Err(P2pError::Rejected(RejectReason::NotStaked))
    ));
    let entry = SignedEntry::sign(
        &key("mallory"),
        &GENESIS,
        "open/pos",
        b"intruder".to_vec(),
        now_ms() + 20_000,
    );
    nodes[3]
        .client
        .publish_entry("open/pos", entry)
        .await
        .unwrap();
    wait_for(Duration::from_secs(5), || async {
        nodes[..3]
            .iter()
            .any(|n| n.client.metrics().rejected(RejectKind::NotStaked) > 0)
    })
    .await;
    let dict = nodes[0].client.get("open/pos").await.unwrap();
    assert_eq!(dict.len(), 1);

    // And its RPC calls are refused, while a registered caller passes the
    // stake check (node0 serves no methods, so it gets "unknown method").
    match nodes[3]
        .client
        .request(nodes[0].peer_id(), "any", vec![])
        .await
    {
        Err(P2pError::Refused {
            refusal: Refusal::NotStaked,
            ..
        }) => {}
        other => panic!("expected not staked, got {other:?}"),
    }
    match nodes[1]
        .client
        .request(nodes[0].peer_id(), "any", vec![])
        .await
    {
        Err(P2pError::Refused {
            refusal: Refusal::UnknownMethod(_),
            ..
        }) => {}
        other => panic!("expected unknown method, got {other:?}"),
    }
    drop(nodes);
    drop(chain);
    let _ = std::fs::remove_dir_all(&dir);
}
