//! The chain node's Prometheus metrics, served with `/health` and
//! `/ready` on the RPC port: heights, finality lag and pool size read at
//! each scrape, block import time and RPC latency observed as they
//! happen.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::node::Shared;

/// A committed height this far behind finality or more makes the node
/// not ready: it serves state older than the network's.
pub(crate) const READY_LAG: u64 = 5;

/// What the chain node observes as it runs.
#[derive(Clone, Debug)]
pub(crate) struct ChainMetrics {
    /// Seconds to commit one finalized block (store write, state swap,
    /// pool revalidation).
    pub(crate) block_import: Histogram,
    /// Seconds to answer one JSON-RPC call, by method.
    pub(crate) rpc_latency: Family<Vec<(&'static str, String)>, Histogram>,
}

impl Default for ChainMetrics {
    fn default() -> Self {
        Self {
            block_import: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            rpc_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
        }
    }
}

impl ChainMetrics {
    /// Registers these metrics and the scrape-time gauges of `shared`
    /// under the prefix `chain`.
    pub(crate) fn register(&self, registry: &mut Registry, shared: Weak<Shared>) {
        let chain = registry.sub_registry_with_prefix("chain");
        chain.register(
            "block_import_seconds",
            "Time to commit one finalized block: store write, state swap, pool revalidation",
            self.block_import.clone(),
        );
        chain.register(
            "rpc_request_seconds",
            "Time to answer one JSON-RPC call, by method",
            self.rpc_latency.clone(),
        );
        chain.register_collector(Box::new(Heights(shared)));
    }

    /// Records that a call of `method` took `elapsed`. Unknown methods
    /// share one label, so callers cannot grow the label set.
    pub(crate) fn rpc_call(&self, method: &str, known: bool, elapsed: Duration) {
        let method = if known { method } else { "unknown" };
        self.rpc_latency
            .get_or_create(&vec![("method", method.to_string())])
            .observe(elapsed.as_secs_f64());
    }
}

/// The committed height, finalized height, finality lag and pool size,
/// read at each scrape.
#[derive(Debug)]
struct Heights(Weak<Shared>);

impl Collector for Heights {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(shared) = self.0.upgrade() else {
            return Ok(());
        };
        let height = shared.state().height();
        let finalized = shared.finalized_tip.load(Ordering::Relaxed).max(height);
        let pool = shared.pool().len() as u64;
        let gauges: [(&str, &str, u64); 4] = [
            ("height", "Height of the best committed block", height),
            (
                "finalized_height",
                "Highest height consensus has finalized",
                finalized,
            ),
            (
                "finality_lag_blocks",
                "Blocks finalized but not yet committed here",
                finalized - height,
            ),
            ("pool_size", "Transactions waiting in the pool", pool),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
