//! Verified serving: how many requests it takes to catch a server that
//! corrupts what it serves, by check rate and by how often it cheats
//! (against the expectation 1 / (rate x share)), and what the checks cost
//! the swarm (aggregate tokens/s with checks off, at the default rate, and
//! on every sequence), plus the cost of signing a receipt per step.
//! Real servers, real sockets, the real model; prints Markdown tables.

mod common;

use common::{MODEL, loopback_config};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypertensor_consensus::evidence::{ReceiptFields, Transcript, output_digest};
use hypertensor_inference::spot_check::Draws;
use hypertensor_inference::{
    BlockServer, ClientConfig, Corruption, DEFAULT_CHECK_RATE, ServerConfig, ServingFault,
    SwarmClient,
};
use hypertensor_model::{BlockSpan, Flow, GenerationRequest, GgufFile, SamplingParams, generate};
use hypertensor_p2p::Multiaddr;
use hypertensor_primitives::{H256, Keypair};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
];
/// Trials (seeds) per detection setting.
const TRIALS: u64 = 5;
/// Requests after which a trial gives up.
const MAX_REQUESTS: usize = 400;

/// A bootstrap node and servers on loopback; dropped, everything stops.
struct Swarm {
    name: String,
    boot_addr: Multiaddr,
    gguf: GgufFile,
    path: std::path::PathBuf,
    tasks: Vec<JoinHandle<()>>,
    servers: usize,
    clients: usize,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Swarm {
    async fn new(name: &str, path: &std::path::Path) -> Swarm {
        let (boot, _events, lp) =
            hypertensor_p2p::new(loopback_config(&format!("{name}-boot"), None)).unwrap();
        let tasks = vec![tokio::spawn(lp.run())];
        let boot_addr = boot.listen_addrs().await.unwrap()[0]
            .clone()
            .with_p2p(boot.peer_id())
            .unwrap();
        std::mem::forget(boot);
        Swarm {
            name: name.into(),
            boot_addr,
            gguf: GgufFile::open(path).unwrap(),
            path: path.into(),
            tasks,
            servers: 0,
            clients: 0,
        }
    }

    async fn server(&mut self, range: std::ops::Range<usize>, config: ServerConfig) {
        self.servers += 1;
        let name = format!("{}-server{}", self.name, self.servers);
        let (p2p, events, lp) =
            hypertensor_p2p::new(loopback_config(&name, Some(&self.boot_addr))).unwrap();
        self.tasks.push(tokio::spawn(lp.run()));
        let span = BlockSpan::load(&self.gguf, range).unwrap();
        let server = Arc::new(BlockServer::new(span, config).unwrap());
        self.tasks.push(tokio::spawn(server.run(p2p, events)));
    }

    async fn client(&mut self, tweak: impl FnOnce(&mut ClientConfig)) -> Arc<SwarmClient> {
        self.clients += 1;
        let name = format!("{}-client{}", self.name, self.clients);
        let (p2p, _events, lp) =
            hypertensor_p2p::new(loopback_config(&name, Some(&self.boot_addr))).unwrap();
        self.tasks.push(tokio::spawn(lp.run()));
        let mut config = ClientConfig::new(MODEL);
        config.session_tokens = Some(256);
        tweak(&mut config);
        let client =
            SwarmClient::load(&self.path, p2p, tokio::runtime::Handle::current(), config).unwrap();
        let start = Instant::now();
        while client.servers(0).await.map(|s| s.len()).unwrap_or(0) < self.servers {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "servers never announced"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Arc::new(client)
    }
}

/// One greedy generation of `tokens` through `client`.
async fn generate_through(client: &Arc<SwarmClient>, prompt: &'static str, tokens: usize) -> usize {
    let c = client.clone();
    tokio::task::spawn_blocking(move || {
        let prompt = c.tokenizer().encode_with_bos(prompt, false).unwrap();
        let mut session = c.session();
        let request = GenerationRequest {
            prompt,
            max_tokens: tokens,
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            stop: vec![],
        };
        generate(&mut session, c.tokenizer(), &request, |_| Flow::Continue)
            .unwrap()
            .tokens
            .len()
    })
    .await
    .unwrap()
}

/// Waits until `client` has judged `n` checked sequences.
async fn judged(client: &SwarmClient, n: u64) {
    let start = Instant::now();
    loop {
        let s = client.stats();
        if s.checks + s.checks_skipped >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "checks stuck: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Requests until a client checking `rate` of sequences (draws seeded
/// with `seed`) convicts the cheater of `swarm`.
async fn requests_to_catch(swarm: &mut Swarm, rate: f64, seed: u64) -> Option<usize> {
    let client = swarm
        .client(|c| {
            c.check_rate = rate;
            c.check_seed = Some(seed);
        })
        .await;
    let mut draws = Draws::new(rate, Some(seed));
    let mut checked = 0;
    for request in 1..=MAX_REQUESTS {
        generate_through(&client, PROMPTS[request % 3], 4).await;
        if draws.next_is_checked() {
            draws.hop(1);
            checked += 1;
            judged(&client, checked).await;
        }
        if client.stats().convictions > 0 {
            return Some(request);
        }
    }
    None
}

fn detection(runtime: &Runtime, path: &std::path::Path) {
    println!("\n### Detection: requests until the cheater is convicted\n");
    println!(
        "A server of the whole model announced fastest (so it serves every request) adds noise of 5% \
         of each row's RMS to the outputs of a share of its sessions; two honest servers hold the same blocks. \
         {TRIALS} seeds per row.\n"
    );
    println!("| check rate | cheats on | expected 1/(rate x share) | measured mean | min - max |");
    println!("|---|---|---|---|---|");
    for share in [1.0, 0.25] {
        runtime.block_on(async {
            let mut swarm = Swarm::new(&format!("detect{}", (share * 100.0) as u32), path).await;
            let mut cheat = ServerConfig::new(MODEL);
            cheat.throughput = Some(1000.0);
            cheat.fault = Some(ServingFault {
                corruption: Corruption::Noise { relative: 0.05 },
                share,
                seed: 9,
                pushed_only: false,
            });
            swarm.server(0..30, cheat).await;
            for _ in 0..2 {
                let mut honest = ServerConfig::new(MODEL);
                honest.throughput = Some(100.0);
                swarm.server(0..30, honest).await;
            }
            for rate in [1.0, 0.2, DEFAULT_CHECK_RATE] {
                let mut counts = Vec::new();
                for seed in 0..TRIALS {
                    if let Some(n) = requests_to_catch(&mut swarm, rate, 100 + seed).await {
                        counts.push(n);
                    }
                }
                let mean = counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64;
                println!(
                    "| {rate} | {:.0}% of sessions | {:.0} | {mean:.1} ({} of {TRIALS} caught) | {} - {} |",
                    share * 100.0,
                    1.0 / (rate * share),
                    counts.len(),
                    counts.iter().min().unwrap_or(&0),
                    counts.iter().max().unwrap_or(&0),
                );
            }
        });
    }
}

fn overhead(runtime: &Runtime, path: &std::path::Path) {
    const CONCURRENT: usize = 8;
    const ROUNDS: usize = 6;
    const TOKENS: usize = 24;
    println!("\n### Overhead: aggregate tokens/s with checks off and on\n");
    println!(
        "Six honest servers (three of blocks 0..15, three of 15..30), {CONCURRENT} concurrent sequences \
         of {TOKENS} tokens, {ROUNDS} rounds; the time runs until every check has finished.\n"
    );
    println!("| check rate | sequences checked | tokens/s | vs checks off |");
    println!("|---|---|---|---|");
    runtime.block_on(async {
        let mut swarm = Swarm::new("overhead", path).await;
        for range in [0..15, 0..15, 0..15, 15..30, 15..30, 15..30] {
            swarm.server(range, ServerConfig::new(MODEL)).await;
        }
        let mut baseline = None;
        for rate in [0.0, DEFAULT_CHECK_RATE, 1.0] {
            let client = swarm
                .client(|c| {
                    c.check_rate = rate;
                    c.check_seed = Some(7);
                })
                .await;
            // Warm the route and latency probes.
            generate_through(&client, PROMPTS[0], 2).await;
            settle(&client).await;
            let warm = client.stats();
            let start = Instant::now();
            let mut tokens = 0;
            for round in 0..ROUNDS {
                let runs = (0..CONCURRENT)
                    .map(|i| generate_through(&client, PROMPTS[(round + i) % 3], TOKENS));
                tokens += futures::future::join_all(runs).await.iter().sum::<usize>();
            }
            // Checks of the last sequences finish after them.
            settle(&client).await;
            let rate_tps = tokens as f64 / start.elapsed().as_secs_f64();
            let s = client.stats();
            let base = *baseline.get_or_insert(rate_tps);
            println!(
                "| {rate} | {} of {} | {rate_tps:.1} | {:.3} |",
                s.checks - warm.checks,
                CONCURRENT * ROUNDS,
                rate_tps / base
            );
        }
    });
}

/// Waits until every check `client` started has been judged.
async fn settle(client: &SwarmClient) {
    loop {
        let s = client.stats();
        if s.checks + s.checks_skipped >= s.checks_started {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn receipts() {
    // What every answer costs its server: hashing the input and output
    // rows and one Ed25519 signature, for a decode step of one row.
    let keypair = Keypair::dev("bench-receipt");
    let client = Keypair::dev("bench-client").peer_id();
    let row = vec![0x5au8; 576 * 4];
    let n = 2000;
    let start = Instant::now();
    let mut transcript =
        Transcript::new(MODEL, 0, 10, hypertensor_consensus::evidence::Encoding::F32);
    for i in 0..n {
        transcript.step(i, 1, &row);
        let (_, digest) = output_digest(&row, row.len());
        let fields = ReceiptFields {
            client: &client,
            session: &[1; 16],
            model: MODEL,
            start: 0,
            end: 10,
            encoding: hypertensor_consensus::evidence::Encoding::F32,
            position: i,
            n_tokens: 1,
            inputs: &transcript.digest(),
            output: &digest,
        };
        std::hint::black_box(fields.sign(&keypair, &H256([3; 32])));
    }
    let per_step = start.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    println!("\n### Receipts\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| signing a one-row step's receipt (hashes + Ed25519), µs | {per_step:.1} |");
}

fn main() {
    let path: std::path::PathBuf = std::env::var_os("HYPERTENSOR_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| hypertensor_fetch::default_model_path(true).expect("default model"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // `-- receipts`, `-- overhead` or `-- detection` runs one part.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    if run("receipts") {
        receipts();
    }
    if run("overhead") {
        overhead(&runtime, &path);
    }
    if run("detection") {
        detection(&runtime, &path);
    }
    std::process::exit(0);
}
