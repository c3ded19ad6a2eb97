//! The chain as the dashboard shows it, and the consensus metrics read
//! from it: the finalized head, the epoch's progress and elected
//! validator, every node's class, stake, balance and penalties, and for
//! each recently settled epoch its attestation ratio, outcome, scores and
//! rewards.
//!
//! A settled epoch never changes, so its report is read once (consensus
//! data and the settlement block's events) and kept; each overview reads
//! the head, the epoch, the subnet, its elected validator, its nodes and
//! their owners' balances afresh, at most once a second whatever the
//! number of dashboards open.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hypertensor_api::ChainView;
use hypertensor_chain_client::{BlockId, Client as ChainClient};
use hypertensor_primitives::{Balance, Fixed, TENSOR};
use hypertensor_runtime::{Event, NodeId, SettlementOutcome, SubnetId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::chain::ChainConnection;

/// Settled epochs an overview lists.
pub const OVERVIEW_EPOCHS: u64 = 12;

/// One settled epoch, as the chain recorded it.
#[derive(Clone, Debug)]
struct SettledEpoch {
    epoch: u64,
    elected: Option<NodeId>,
    attesters: usize,
    snapshot: usize,
    outcome: Option<SettlementOutcome>,
    scores: BTreeMap<NodeId, u128>,
    rewards: BTreeMap<NodeId, Balance>,
}

/// The outcome's name, as the dashboard and metrics label it.
fn outcome_name(outcome: &SettlementOutcome) -> &'static str {
    match outcome {
        SettlementOutcome::NoProposal => "no_proposal",
        SettlementOutcome::BelowMinAttestation { .. } => "below_min_attestation",
        SettlementOutcome::HeldRewards { .. } => "held_rewards",
        SettlementOutcome::InConsensus { .. } => "in_consensus",
    }
}

/// TENSOR as a number, for display and charts (exact amounts stay on
/// chain).
fn tensor(amount: Balance) -> f64 {
    amount as f64 / TENSOR as f64
}

/// A chain fraction as a number.
fn fraction(raw: u128) -> f64 {
    raw as f64 / Fixed::SCALE as f64
}

/// Reads one settled epoch of `subnet`.
async fn settled_epoch(
    chain: &ChainClient,
    subnet: SubnetId,
    epoch: u64,
    epoch_length: u64,
) -> hypertensor_chain_client::Result<SettledEpoch> {
    let consensus = chain.consensus_data(subnet, Some(epoch)).await?;
    let settlement = (epoch + 1) * epoch_length;
    let mut rewards = BTreeMap::new();
    for record in chain
        .events(Some(BlockId::Height(settlement)))
        .await?
        .unwrap_or_default()
    {
        if let Event::RewardPaid {
            subnet: s,
            node,
            amount,
            ..
        } = record.event
            && s == subnet
        {
            *rewards.entry(node).or_default() += amount;
        }
    }
    Ok(SettledEpoch {
        epoch,
        elected: consensus.as_ref().map(|c| c.validator),
        attesters: consensus.as_ref().map_or(0, |c| c.attestations.len()),
        snapshot: consensus.as_ref().map_or(0, |c| c.snapshot.len()),
        scores: consensus
            .as_ref()
            .and_then(|c| c.proposal.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        outcome: consensus.and_then(|c| c.outcome),
        rewards,
    })
}

/// The dashboard's chain view of one subnet, over a chain connection.
/// Clones share the cache of settled epochs and the last overview: any
/// number of open dashboards cost the chain one read per
/// [`OVERVIEW_TTL`].
#[derive(Clone)]
pub struct ChainOverview {
    chain: Arc<ChainConnection>,
    subnet: SubnetId,
    settled: Arc<Mutex<BTreeMap<u64, SettledEpoch>>>,
    last: Arc<tokio::sync::Mutex<Option<(Instant, Value)>>>,
}

/// How long one read of the overview serves every request.
pub const OVERVIEW_TTL: Duration = Duration::from_secs(1);
/// Longest one read of the overview may take before the request is
/// answered with an error.
pub const OVERVIEW_TIMEOUT: Duration = Duration::from_secs(5);

impl ChainOverview {
    /// The overview of `subnet` read through `chain`.
    pub fn new(chain: Arc<ChainConnection>, subnet: SubnetId) -> Self {
        Self {
            chain,
            subnet,
            settled: Arc::new(Mutex::new(BTreeMap::new())),
            last: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The overview (the JSON shape is in `docs/dashboard.md`): read at
    /// most once per [`OVERVIEW_TTL`] (requests arriving during a read
    /// wait for it), within [`OVERVIEW_TIMEOUT`]. A closed connection is
    /// reconnected in the background; the request gets the error at once.
    pub async fn read(&self) -> Result<Value, String> {
        let mut last = self.last.lock().await;
        if let Some((at, overview)) = last.as_ref()
            && at.elapsed() < OVERVIEW_TTL
        {
            return Ok(overview.clone());
        }
        let chain = self.chain.client().await;
        let read = tokio::time::timeout(OVERVIEW_TIMEOUT, self.read_with(&chain)).await;
        match read {
            Ok(Ok(overview)) => {
                *last = Some((Instant::now(), overview.clone()));
                Ok(overview)
            }
            Ok(Err(e)) => {
                if matches!(e, hypertensor_chain_client::Error::Closed) {
                    self.chain.reconnect_in_background(chain);
                }
                Err(e.to_string())
            }
            Err(_) => Err(format!("the chain did not answer in {OVERVIEW_TIMEOUT:?}")),
        }
    }

    async fn read_with(&self, chain: &ChainClient) -> hypertensor_chain_client::Result<Value> {
        let health = chain.health().await?;
        let info = chain.epoch_info().await?;
        let subnet = chain.subnet(self.subnet).await?;
        let elected = chain
            .elected_validator(self.subnet, Some(info.epoch))
            .await?
            .map(|node| node.id);
        let on_chain = chain.subnet_nodes(self.subnet).await?;
        let accounts =
            futures::future::join_all(on_chain.iter().map(|n| chain.account(&n.owner))).await;
        let mut nodes = Vec::new();
        for (node, account) in on_chain.iter().zip(accounts) {
            let balance = account?.free;
            nodes.push(json!({
                "id": node.id,
                "peer_id": node.peer_id.to_string(),
                "class": format!("{:?}", node.class),
                "stake": tensor(node.stake),
                "balance": tensor(balance),
                "penalties": node.penalties,
            }));
        }
        let first = info.epoch.saturating_sub(OVERVIEW_EPOCHS);
        let mut epochs = Vec::new();
        for epoch in first..info.epoch {
            let known = self.lock().get(&epoch).cloned();
            let settled = match known {
                Some(settled) => settled,
                None => {
                    let settled =
                        settled_epoch(chain, self.subnet, epoch, info.epoch_length).await?;
                    let mut kept = self.lock();
                    kept.insert(epoch, settled.clone());
                    while kept.len() as u64 > OVERVIEW_EPOCHS {
                        kept.pop_first();
                    }
                    settled
                }
            };
            if settled.elected.is_some() {
                epochs.push(epoch_json(&settled));
            }
        }
        Ok(json!({
            "finalized": health.finalized_tip.max(health.height),
            "best": health.height,
            "finality_lag": health.finalized_tip.saturating_sub(health.height),
            "epoch": {
                "number": info.epoch,
                "length": info.epoch_length,
                "block_in_epoch": info.block_in_epoch,
                "progress": info.block_in_epoch as f64 / info.epoch_length.max(1) as f64,
            },
            "subnet": subnet.map(|s| json!({
                "id": s.id,
                "name": s.name,
                "state": format!("{:?}", s.state),
            })),
            "elected": elected,
            "nodes": nodes,
            "epochs": epochs,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, SettledEpoch>> {
        self.settled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn epoch_json(e: &SettledEpoch) -> Value {
    let by_node = |m: BTreeMap<NodeId, f64>| {
        m.into_iter()
            .map(|(node, v)| (node.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "epoch": e.epoch,
        "elected": e.elected,
        "attesters": e.attesters,
        "snapshot": e.snapshot,
        "ratio": if e.snapshot == 0 { 0.0 } else { e.attesters as f64 / e.snapshot as f64 },
        "outcome": e.outcome.as_ref().map(outcome_name),
        "scores": by_node(e.scores.iter().map(|(n, s)| (*n, fraction(*s))).collect()),
        "rewards": by_node(e.rewards.iter().map(|(n, r)| (*n, tensor(*r))).collect()),
    })
}

impl ChainView for ChainOverview {
    fn overview(&self) -> BoxFuture<'static, Result<Value, String>> {
        let this = self.clone();
        Box::pin(async move { this.read().await })
    }
}

/// The subnet's consensus as metrics: settled epochs by outcome, the last
/// settled epoch's attestation ratio, and records this node wrote and
/// calls it landed, by duty.
#[derive(Clone, Debug, Default)]
pub struct ConsensusMetrics {
    epochs: Family<Vec<(&'static str, &'static str)>, Counter>,
    attestation_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    settled_epoch: Gauge,
    records_written: Family<Vec<(&'static str, String)>, Counter>,
    calls_on_chain: Family<Vec<(&'static str, String)>, Counter>,
}

impl ConsensusMetrics {
    /// Registers the metrics under the prefix `consensus`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("consensus");
        r.register(
            "epochs",
            "Settled epochs of the subnet seen by this node, by outcome",
            self.epochs.clone(),
        );
        r.register(
            "attestation_ratio",
            "Attestations over the validator snapshot in the last settled epoch",
            self.attestation_ratio.clone(),
        );
        r.register(
            "settled_epoch",
            "The last settled epoch seen",
            self.settled_epoch.clone(),
        );
        r.register(
            "records_written",
            "Consensus records this node wrote to the DHT, by duty",
            self.records_written.clone(),
        );
        r.register(
            "calls_on_chain",
            "Consensus calls of this node included on chain, by duty",
            self.calls_on_chain.clone(),
        );
    }

    pub(crate) fn record_written(&self, duty: hypertensor_duties::Duty) {
        self.records_written
            .get_or_create(&vec![("duty", duty_name(duty))])
            .inc();
    }

    pub(crate) fn call_on_chain(&self, duty: hypertensor_duties::Duty) {
        self.calls_on_chain
            .get_or_create(&vec![("duty", duty_name(duty))])
            .inc();
    }

    fn settled(&self, epoch: &SettledEpoch) {
        let outcome = epoch.outcome.as_ref().map_or("none", outcome_name);
        self.epochs.get_or_create(&vec![("outcome", outcome)]).inc();
        let ratio = if epoch.snapshot == 0 {
            0.0
        } else {
            epoch.attesters as f64 / epoch.snapshot as f64
        };
        self.attestation_ratio.set(ratio);
        self.settled_epoch
            .set(i64::try_from(epoch.epoch).unwrap_or(i64::MAX));
    }
}

/// A duty's name as a label value.
fn duty_name(duty: hypertensor_duties::Duty) -> String {
    format!("{duty:?}").to_lowercase()
}

/// Follows `subnet`'s settlements through `chain`, polling every `poll`,
/// and counts each newly settled epoch in `metrics`. Runs until aborted;
/// a failed read is retried at the next poll.
pub async fn watch_settlements(
    chain: Arc<ChainConnection>,
    subnet: SubnetId,
    metrics: ConsensusMetrics,
    poll: Duration,
) {
    // The next epoch to count: none before this node started watching.
    let mut next: Option<u64> = None;
    loop {
        tokio::time::sleep(poll).await;
        let client = chain.client().await;
        let read = async {
            let info = client.epoch_info().await?;
            let Some(settled) = info.epoch.checked_sub(1) else {
                return Ok(());
            };
            let from = *next.get_or_insert(settled);
            // Every epoch settled since the last count, in order, even
            // those that settled while the chain did not answer.
            for epoch in from..=settled {
                let report = settled_epoch(&client, subnet, epoch, info.epoch_length).await?;
                if report.elected.is_some() {
                    metrics.settled(&report);
                }
                next = Some(epoch + 1);
            }
            Ok::<_, hypertensor_chain_client::Error>(())
        };
        if let Err(e) = read.await {
            tracing::debug!(error = %e, "cannot read the last settlements");
            if matches!(e, hypertensor_chain_client::Error::Closed) {
                chain.reconnect_in_background(client);
            }
        }
    }
}
