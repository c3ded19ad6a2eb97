//! DHT benchmark: 100 peers in one process on loopback.
//!
//! Builds 100 real nodes (TCP + Noise + Yamux, Kademlia k = 20), stores
//! records from random nodes and reads them back from other random nodes,
//! and reports store and get latency (p50, p99, mean) and the get success
//! rate (the merged dictionary holds the written entry with its value)
//! beside hivemind's published figure for 1024 peers (mean get 6.6 ms,
//! 100% success). Goal: get p50 < 5 ms and 100% success.
//!
//! Prints a table and writes JSON to `<target>/bench-p2p.json`.
//! Run: `cargo bench -p hypertensor-p2p`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypertensor_p2p::{
    CachingStakeOracle, Client, Config, KeySchema, SchemaRegistry, StakeSet, WallClockEpochs,
    now_ms, record::peer_id_of,
};
use hypertensor_primitives::{H256, Keypair};
use rand::{Rng, SeedableRng};

const PEERS: usize = 100;
const STORES: usize = 300;
const GETS: usize = 1000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
    success: f64,
    n: usize,
}

fn stats(mut ms: Vec<f64>, ok: usize, n: usize) -> Stats {
    ms.sort_by(|a, b| a.total_cmp(b));
    Stats {
        p50: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        success: ok as f64 / n.max(1) as f64,
        n,
    }
}

async fn build(keys: &[Keypair]) -> Vec<Client> {
    let stake = StakeSet(keys.iter().map(peer_id_of).collect::<HashSet<_>>());
    let oracle = Arc::new(CachingStakeOracle::new(stake));
    let schemas =
        SchemaRegistry::new().register(KeySchema::bytes("bench/", 1024, Duration::from_secs(600)));
    let mut clients = Vec::new();
    let mut boot: Option<hypertensor_p2p::Multiaddr> = None;
    for (i, key) in keys.iter().enumerate() {
        let mut cfg = Config::new(
            key.clone(),
            1,
            H256::ZERO,
            schemas.clone(),
            Arc::new(WallClockEpochs {
                epoch_length: Duration::from_secs(3600),
            }),
            oracle.clone(),
        );
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
        cfg.writes_per_epoch = 10_000;
        if let Some(b) = &boot {
            cfg.bootstrap = vec![b.clone()];
        }
        let (client, _events, event_loop) = hypertensor_p2p::new(cfg).expect("node starts");
        tokio::spawn(event_loop.run());
        if i == 0 {
            let addr = client.listen_addrs().await.expect("listening")[0].clone();
            boot = Some(addr.with_p2p(client.peer_id()).expect("p2p suffix"));
        }
        clients.push(client);
    }
    // Let the routing tables fill.
    let start = Instant::now();
    loop {
        let mut min = usize::MAX;
        for c in &clients {
            min = min.min(c.routing_table_size().await.expect("running"));
        }
        if min >= 20 || start.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "routing tables: min {min} entries after {:?}",
                start.elapsed()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    clients
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let keys: Vec<Keypair> = (0..PEERS).map(|i| Keypair::dev(&format!("bench{i}"))).collect();
        let clients = build(&keys).await;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);

        let mut store_ms = Vec::new();
        let mut store_ok = 0;
        let mut written = Vec::new();
        for i in 0..STORES {
            let w = rng.random_range(0..PEERS);
            let key = format!("bench/{i}");
            let value = format!("value-{i}").into_bytes();
            let t = Instant::now();
            let r = clients[w].store(&key, value.clone(), now_ms() + 300_000).await;
            store_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if r.is_ok() {
                store_ok += 1;
            }
            written.push((key, w, value));
        }
        let mut get_ms = Vec::new();
        let mut get_ok = 0;
        for _ in 0..GETS {
            let (key, w, value) = &written[rng.random_range(0..written.len())];
            let mut r = rng.random_range(0..PEERS);
            while r == *w {
                r = rng.random_range(0..PEERS);
            }
            let t = Instant::now();
            let got = clients[r].get(key).await;
            get_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if let Ok(dict) = got
                && dict.get(&clients[*w].peer_id()).is_some_and(|e| &e.value == value)
            {
                get_ok += 1;
            }
        }
        let slow = |ms: &[f64]| {
            let mut idx: Vec<(usize, f64)> = ms.iter().copied().enumerate().collect();
            idx.sort_by(|a, b| b.1.total_cmp(&a.1));
            idx.truncate(8);
            idx.iter()
                .map(|(i, t)| format!("#{i}: {t:.0} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("slowest stores: {}", slow(&store_ms));
        println!("slowest gets: {}", slow(&get_ms));
        let store = stats(store_ms, store_ok, STORES);
        let get = stats(get_ms, get_ok, GETS);

        println!("DHT, {PEERS} peers in one process on loopback (k = 20, get quorum 3)");
        println!("| operation | n | p50 ms | p99 ms | mean ms | success | baseline |");
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| store | {} | {:.2} | {:.2} | {:.2} | {:.1}% | |",
            store.n, store.p50, store.p99, store.mean, store.success * 100.0
        );
        println!(
            "| get | {} | {:.2} | {:.2} | {:.2} | {:.1}% | hivemind, 1024 peers: mean 6.6 ms, 100%; goal p50 < 5 ms, 100% |",
            get.n, get.p50, get.p99, get.mean, get.success * 100.0
        );
        let row = |name: &str, s: &Stats| {
            serde_json::json!({
                "operation": name, "n": s.n, "p50_ms": s.p50, "p99_ms": s.p99,
                "mean_ms": s.mean, "success": s.success,
            })
        };
        let json = serde_json::json!({
            "benchmark": "p2p-dht",
            "peers": PEERS,
            "results": [row("store", &store), row("get", &get)],
            "baseline": {"source": "hivemind, 1024 peers", "get_mean_ms": 6.6, "get_success": 1.0},
            "goal": {"get_p50_ms": 5.0, "get_success": 1.0},
        });
        // The executable lives in <target>/<profile>/deps/.
        let target = std::env::current_exe()
            .ok()
            .and_then(|p| Some(p.parent()?.parent()?.parent()?.to_path_buf()))
            .unwrap_or_else(|| "target".into());
        let path = target.join("bench-p2p.json");
        match serde_json::to_string_pretty(&json).map(|s| std::fs::write(&path, s)) {
            Ok(Ok(())) => println!("wrote {}", path.display()),
            _ => eprintln!("could not write {}", path.display()),
        }
    });
}
