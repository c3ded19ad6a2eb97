//! Runs a devnet for a number of consensus epochs and keeps what the chain
//! said about each of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;

use hypertensor_chain_client::{BlockId, Client};
use hypertensor_consensus::evidence::encode_evidence_record;
use hypertensor_consensus::phase::RecordKind;
use hypertensor_consensus::records::{Challenge, HosterReveal, ValidatorReveal};
use hypertensor_duties::byzantine::{Behaviour, Byzantine};
use hypertensor_node::DutiesWrapper;
use hypertensor_node::devnet::{Devnet, DevnetConfig, EpochReport};
use hypertensor_primitives::Fixed;
use hypertensor_primitives::codec::Encode;
use hypertensor_runtime::{Event, EventRecord, SettlementOutcome, Totals};

/// A devnet node behaving as `behaviour`: the Byzantine wrapper over its
/// honest duties.
pub(crate) fn byzantine(behaviour: Behaviour) -> DutiesWrapper {
    DutiesWrapper::new(move |duties| Box::new(Byzantine::new(duties, behaviour, rand::random())))
}

/// Blocks per epoch of the test devnets.
pub(crate) const EPOCH_LENGTH: u64 = 20;
/// Milliseconds per block of the test devnets.
pub(crate) const BLOCK_MS: u64 = 400;

pub(crate) fn model_path() -> PathBuf {
    match std::env::var_os("HYPERTENSOR_MODEL") {
        Some(p) => p.into(),
        None => hypertensor_fetch::default_model_path(true).expect("default model"),
    }
}

/// A devnet configuration for a test: fresh directory, API on a free
/// port, fast blocks, no throughput measurement.
pub(crate) fn config(name: &str) -> DevnetConfig {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hypertensor-devnet-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = DevnetConfig::new(dir, model_path(), "smollm2");
    config.epoch_length = EPOCH_LENGTH;
    config.block_time_ms = BLOCK_MS;
    config.api_addr = "127.0.0.1:0".parse().unwrap();
    config.throughput = Some(100.0);
    config
}

/// A devnet run for some consensus epochs, still running.
pub(crate) struct Scenario {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) devnet: Devnet,
    /// Reports of epochs `first..first + n`, each complete (settled).
    pub(crate) reports: Vec<EpochReport>,
    /// Chain totals sampled at every epoch boundary.
    pub(crate) totals: Vec<Totals>,
}

impl Scenario {
    /// Stops every node and the gateway, keeping the chain. A scenario
    /// shared by several tests reads only what is on chain once it has
    /// run; nodes left running would load the machine under the tests
    /// that run after it, and those tests time consensus windows.
    pub(crate) fn stop_nodes(mut self) -> Self {
        let devnet = &mut self.devnet;
        self.runtime.block_on(async {
            for (_, node) in &mut devnet.nodes {
                node.stop().await;
            }
            devnet.gateway.stop().await;
        });
        self
    }

    /// A node's id by its devnet name.
    pub(crate) fn node_id(&self, name: &str) -> u32 {
        self.reports
            .iter()
            .flat_map(|r| &r.nodes)
            .find(|n| n.name == name)
            .map(|n| n.node)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The events of the block that settled `epoch`.
    pub(crate) fn settlement_events(&self, epoch: u64) -> Vec<EventRecord> {
        self.runtime.block_on(async {
            self.devnet
                .chain
                .events(Some(BlockId::Height((epoch + 1) * EPOCH_LENGTH)))
                .await
                .unwrap()
                .unwrap_or_default()
        })
    }
}

/// Starts `config`, waits for the subnet to be active, then for `epochs`
/// consensus epochs to be settled.
pub(crate) fn run(config: DevnetConfig, epochs: u64) -> Scenario {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (devnet, reports, totals) = runtime.block_on(async move {
        let mut devnet = Devnet::start(config).await.expect("the devnet starts");
        tokio::time::timeout(Duration::from_secs(120), devnet.wait_active())
            .await
            .expect("nodes and subnet activate in time")
            .expect("activation succeeds");
        let chain = Client::connect(&devnet.chain_url).await.unwrap();
        let first = chain.epoch_info().await.unwrap().epoch + 1;
        let last_settlement = (first + epochs) * EPOCH_LENGTH;
        let mut heads = chain.subscribe_new_heads().await.unwrap();
        let mut totals = Vec::new();
        let mut reports = Vec::new();
        let budget = Duration::from_millis(BLOCK_MS * EPOCH_LENGTH * (epochs + 3) * 2);
        tokio::time::timeout(budget, async {
            loop {
                let height = heads.next().await.unwrap().unwrap().header.height;
                if height % EPOCH_LENGTH == 0 {
                    totals.push(chain.totals().await.unwrap());
                    // Report each epoch right at its settlement, so classes
                    // and balances are those the settlement left.
                    let settled = height / EPOCH_LENGTH - 1;
                    if settled >= first {
                        let report = devnet.epoch_report(settled).await.unwrap();
                        eprintln!("{report:?}");
                        reports.push(report);
                    }
                }
                if height >= last_settlement {
                    break;
                }
            }
        })
        .await
        .expect("the epochs pass in time");
        (devnet, reports, totals)
    });
    Scenario {
        runtime,
        devnet,
        reports,
        totals,
    }
}

/// The attestation ratio of a settled, in-consensus epoch.
pub(crate) fn in_consensus_ratio(report: &EpochReport) -> Option<Fixed> {
    match report.outcome {
        Some(SettlementOutcome::InConsensus { ratio, .. }) => Some(ratio),
        _ => None,
    }
}

/// Score-and-stake rewards paid per node in these events (the elected
/// validator's share left out).
pub(crate) fn node_rewards(events: &[EventRecord]) -> std::collections::BTreeMap<u32, u128> {
    let mut out = std::collections::BTreeMap::new();
    for e in events {
        if let Event::RewardPaid {
            node,
            amount,
            validator_reward: false,
            ..
        } = &e.event
        {
            *out.entry(*node).or_default() += amount;
        }
    }
    out
}

/// A well-formed value of each consensus record kind.
pub(crate) fn record_value(kind: RecordKind) -> Vec<u8> {
    match kind {
        RecordKind::Challenge => Challenge {
            seed: [7; 32],
            tokens: 8,
        }
        .encode(),
        RecordKind::HosterCommit | RecordKind::ValidatorCommit => vec![9; 32],
        RecordKind::HosterReveal => HosterReveal::new([1; 16], 0, vec![[0.5; 64]])
            .unwrap()
            .encode(),
        RecordKind::ValidatorReveal => ValidatorReveal::new([2; 16], &BTreeMap::from([(3, 0.4)]))
            .unwrap()
            .encode(),
        // A record filing no evidence is well-formed.
        RecordKind::Evidence => encode_evidence_record(&[]),
    }
}

/// One POST of a JSON `body` to the gateway's API at `addr`, raw
/// HTTP/1.1; the whole response (status line, headers, body).
pub(crate) async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_string(&mut reply))
        .await
        .expect("the API answers")
        .unwrap();
    reply
}

/// One GET of `path` from `addr`, raw HTTP/1.1: the status and the body.
pub(crate) async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut reply))
        .await
        .expect("the server answers")
        .unwrap();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}
