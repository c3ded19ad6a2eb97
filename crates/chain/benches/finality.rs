//! Finality benchmark of the replicated chain: four validators on
//! loopback (each its own store, RPC, P2P socket and consensus thread, in
//! this process) against the one-validator chain in the same run, at 1 s
//! and 250 ms block times.
//!
//! `cargo bench -p hypertensor-chain --bench finality` (release). For each
//! chain:
//! * **latency**: single transfers, one at a time, each submitted to the
//!   next validator round-robin; time from submission to the finalized
//!   head that includes it (p50, p99);
//! * **throughput**: a burst of pre-signed transfers from many accounts
//!   spread over the validators; finalized transfers per second from the
//!   first submission to the last inclusion;
//! * **finality lag**: time from a block's timestamp (its proposer's
//!   clock when built) to its finalized head reaching a client (p50).
//!
//! Goals (issue 13): finality p50 <= 1.5 block times; four-validator
//! throughput >= 0.8x the one-validator chain's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hypertensor_chain::{ChainConfig, Node};
use hypertensor_chain_client::{BlockId, Client};
use hypertensor_primitives::{H256, Keypair, TENSOR};
use hypertensor_runtime::{Call, ChainValidator, Extrinsic, GenesisAccount, GenesisConfig};

const LATENCY_SAMPLES: usize = 20;
const BURST_ACCOUNTS: usize = 512;
const BURST_PER_ACCOUNT: u64 = 64;

struct Chain {
    nodes: Vec<Node>,
    clients: Vec<Client>,
    genesis_hash: H256,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn start_chain(validators: usize, block_ms: u64, tag: &str) -> Chain {
    let keys: Vec<Keypair> = (0..validators)
        .map(|i| Keypair::dev(&format!("bench-validator-{i}")))
        .collect();
    let mut genesis = GenesisConfig::dev();
    genesis.params.block_time_ms = block_ms;
    genesis
        .accounts
        .extend((0..BURST_ACCOUNTS).map(|i| GenesisAccount {
            account: Keypair::dev(&format!("burst-{i}")).account_id(),
            balance: 1_000 * TENSOR,
        }));
    genesis.validators = keys
        .iter()
        .map(|k| ChainValidator {
            account: k.account_id(),
            address: format!("127.0.0.1:{}", free_port()),
        })
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "hypertensor-bench-finality-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut nodes = Vec::new();
    let mut clients = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let mut config = ChainConfig::dev(
            dir.join(format!("node-{i}")),
            "127.0.0.1:0".parse().expect("address"),
        );
        config.genesis = genesis.clone();
        config.validator_key = key;
        let node = Node::start(config).await.expect("validator starts");
        clients.push(
            Client::connect(&format!("ws://{}", node.rpc_addr()))
                .await
                .expect("connect"),
        );
        nodes.push(node);
    }
    let genesis_hash = nodes[0].genesis_hash();
    // Wait for the first finalized block: every validator is connected.
    let mut heads = clients[0].subscribe_new_heads().await.expect("subscribe");
    let _ = heads.next().await;
    Chain {
        nodes,
        clients,
        genesis_hash,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Watches finalized heads on `client`: records when each extrinsic was
/// seen finalized, and each block's lag behind its timestamp.
fn watch(
    client: Client,
    seen: Arc<Mutex<HashMap<H256, Instant>>>,
    lags: Arc<Mutex<Vec<f64>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut heads = client.subscribe_new_heads().await.expect("subscribe");
        while let Some(Ok(head)) = heads.next().await {
            let arrived = Instant::now();
            let lag = now_ms().saturating_sub(head.header.timestamp_ms);
            lags.lock().unwrap().push(lag as f64);
            if let Ok(Some(block)) = client.block(Some(BlockId::Hash(head.hash))).await {
                let mut seen = seen.lock().unwrap();
                for xt in &block.block.extrinsics {
                    seen.entry(xt.hash()).or_insert(arrived);
                }
            }
        }
    })
}

async fn wait_seen(
    seen: &Mutex<HashMap<H256, Instant>>,
    hash: &H256,
    limit: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(t) = seen.lock().unwrap().get(hash) {
            return Some(*t);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    tps: f64,
    lag_ms: f64,
}

async fn measure(validators: usize, block_ms: u64) -> Figures {
    let chain = start_chain(validators, block_ms, &format!("{validators}x{block_ms}")).await;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let lags = Arc::new(Mutex::new(Vec::new()));
    let watcher = watch(
        chain.clients[0].clone(),
        Arc::clone(&seen),
        Arc::clone(&lags),
    );
    let limit = Duration::from_millis(block_ms * 20 + 10_000);

    // Latency: one transfer at a time.
    let alice = Keypair::dev("alice");
    let bob = Keypair::dev("bob").account_id();
    let mut latencies = Vec::new();
    for n in 0..LATENCY_SAMPLES {
        let xt = Extrinsic::sign(
            &alice,
            n as u64,
            Call::Transfer {
                to: bob,
                amount: TENSOR,
            },
            &chain.genesis_hash,
        );
        let client = &chain.clients[n % validators];
        let started = Instant::now();
        client.submit_extrinsic(&xt).await.expect("submitted");
        let at = wait_seen(&seen, &xt.hash(), limit)
            .await
            .expect("finalized");
        latencies.push(at.duration_since(started).as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);

    // Throughput: a burst over all validators.
    let signed: Vec<(usize, Extrinsic)> = (0..BURST_ACCOUNTS)
        .flat_map(|i| {
            let key = Keypair::dev(&format!("burst-{i}"));
            let genesis = chain.genesis_hash;
            (0..BURST_PER_ACCOUNT).map(move |n| {
                (
                    i,
                    Extrinsic::sign(
                        &key,
                        n,
                        Call::Transfer {
                            to: bob,
                            amount: TENSOR / 100,
                        },
                        &genesis,
                    ),
                )
            })
        })
        .collect();
    let started = Instant::now();
    let mut submitters = Vec::new();
    for v in 0..validators {
        let client = chain.clients[v].clone();
        let mine: Vec<Extrinsic> = signed
            .iter()
            .filter(|(i, _)| i % validators == v)
            .map(|(_, xt)| xt.clone())
            .collect();
        submitters.push(tokio::spawn(async move {
            for xt in mine {
                let _ = client.submit_extrinsic(&xt).await;
            }
        }));
    }
    for s in submitters {
        let _ = s.await;
    }
    let mut last = started;
    let mut included = 0usize;
    for (_, xt) in &signed {
        if let Some(at) = wait_seen(&seen, &xt.hash(), limit).await {
            included += 1;
            last = last.max(at);
        }
    }
    let tps = included as f64 / last.duration_since(started).as_secs_f64().max(1e-9);
    watcher.abort();
    let mut lags = lags.lock().unwrap().clone();
    lags.sort_by(f64::total_cmp);
    for node in chain.nodes {
        let _ = node.stop().await;
    }
    Figures {
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        tps,
        lag_ms: percentile(&lags, 0.5),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "\n{:<34} {:>12} {:>12} {:>14} {:>14}  goal",
        "chain", "p50 ms", "p99 ms", "transfers/s", "lag p50 ms"
    );
    for block_ms in [1000u64, 250] {
        let one = runtime.block_on(measure(1, block_ms));
        let four = runtime.block_on(measure(4, block_ms));
        for (name, f) in [("1 validator (baseline)", &one), ("4 validators", &four)] {
            println!(
                "{:<34} {:>12.1} {:>12.1} {:>14.1} {:>14.1}  p50 <= {:.0} ms; tps >= {:.1}",
                format!("{name}, {block_ms} ms blocks"),
                f.p50_ms,
                f.p99_ms,
                f.tps,
                f.lag_ms,
                1.5 * block_ms as f64,
                0.8 * one.tps
            );
        }
        println!(
            "{:<34} p50 = {:.2} block times, throughput = {:.2}x the one-validator chain",
            format!("  4 validators at {block_ms} ms:"),
            four.p50_ms / block_ms as f64,
            four.tps / one.tps
        );
    }
}
