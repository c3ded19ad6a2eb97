//! Prometheus collectors over what servers and clients already count,
//! read at each scrape: a server's batches (a histogram of their sizes),
//! tokens run, current throughput, sessions and KV cache; a client's
//! sessions, refusals, failovers, bans and spot checks.

use std::sync::{Arc, Weak};

use hypertensor_model::{BATCH_SIZE_BOUNDS, BatchStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::{BlockServer, ClientStats};

/// A block server's metrics (register it with
/// `Registry::register_collector`, typically under the prefix
/// `inference`). It holds the server weakly: a stopped server reports
/// nothing.
#[derive(Debug)]
pub struct ServerCollector(Weak<BlockServer>);

impl ServerCollector {
    /// Reports on `server`.
    pub fn new(server: &Arc<BlockServer>) -> Self {
        Self(Arc::downgrade(server))
    }
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(server) = self.0.upgrade() else {
            return Ok(());
        };
        encode_batches(&mut encoder, &server.batch_stats())?;
        gauge(
            &mut encoder,
            "server_sessions",
            "Sessions open on the server now",
            server.active_sessions() as f64,
        )?;
        let (used, capacity) = server.cache_bytes();
        gauge(
            &mut encoder,
            "server_kv_cache_used_bytes",
            "KV cache bytes reserved by open sessions",
            used as f64,
        )?;
        gauge(
            &mut encoder,
            "server_kv_cache_free_bytes",
            "KV cache bytes the budget can still reserve",
            capacity.saturating_sub(used) as f64,
        )?;
        counter(
            &mut encoder,
            "server_pushed_steps",
            "Steps pushed here by the previous server of a route",
            server.pushed_steps(),
        )?;
        // Training is counted apart from inference.
        let ([forward, backward, refused], rows) = server.training_counts();
        counter(
            &mut encoder,
            "server_train_forward_requests",
            "Training forward requests answered",
            forward,
        )?;
        counter(
            &mut encoder,
            "server_train_backward_requests",
            "Training backward requests answered (each recomputes its forward)",
            backward,
        )?;
        counter(
            &mut encoder,
            "server_train_refusals",
            "Training requests refused (limits, another span, the challenge, busy)",
            refused,
        )?;
        counter(
            &mut encoder,
            "server_train_tokens",
            "Rows (tokens) of the training requests answered",
            rows,
        )
    }
}

/// A batcher's metrics alone (a local model served in batches, as
/// `hypertensor serve` runs it), read through `stats` at each scrape
/// (`None` once the batcher is gone). The names are a block server's.
pub struct BatchCollector(Box<dyn Fn() -> Option<BatchStats> + Send + Sync>);

impl std::fmt::Debug for BatchCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchCollector")
    }
}

impl BatchCollector {
    /// Reports the counters `stats` returns.
    pub fn new(stats: impl Fn() -> Option<BatchStats> + Send + Sync + 'static) -> Self {
        Self(Box::new(stats))
    }
}

impl Collector for BatchCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match (self.0)() {
            Some(stats) => encode_batches(&mut encoder, &stats),
            None => Ok(()),
        }
    }
}

/// The batch size histogram, tokens run and recent tokens per second.
fn encode_batches(
    encoder: &mut DescriptorEncoder,
    stats: &BatchStats,
) -> Result<(), std::fmt::Error> {
    {
        // The encoder sums the classes into cumulative buckets itself:
        // hand it each class's own count, the larger batches as +Inf.
        let buckets: Vec<(f64, u64)> = BATCH_SIZE_BOUNDS
            .iter()
            .map(|bound| *bound as f64)
            .chain(std::iter::once(f64::INFINITY))
            .zip(stats.batch_sizes)
            .collect();
        let mut histogram = encoder.encode_descriptor(
            "server_batch_rows",
            "Rows (tokens of all sessions together) per batch the server ran",
            None,
            MetricType::Histogram,
        )?;
        histogram.encode_histogram::<NoLabelSet>(
            stats.rows as f64,
            stats.batches,
            &buckets,
            None,
        )?;
    }
    counter(
        encoder,
        "server_tokens",
        "Tokens (rows) the server's blocks ran, all sessions together",
        stats.rows,
    )?;
    // The recent rate only moves when a batch runs: an idle server
    // reports 0, not its last busy rate.
    let idle = stats.last_batch.is_none_or(|at| at.elapsed() > IDLE_AFTER);
    gauge(
        encoder,
        "server_tokens_per_second",
        "Rows per second over the recent batches (0 when idle)",
        if idle { 0.0 } else { stats.recent_rows_per_sec },
    )
}

/// A server that ran no batch for this long reports no throughput.
const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// A swarm client's metrics, read through `stats` at each scrape (`None`
/// once the client is gone).
pub struct ClientCollector(Box<dyn Fn() -> Option<ClientStats> + Send + Sync>);

impl std::fmt::Debug for ClientCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCollector")
    }
}

impl ClientCollector {
    /// Reports the counters `stats` returns.
    pub fn new(stats: impl Fn() -> Option<ClientStats> + Send + Sync + 'static) -> Self {
        Self(Box::new(stats))
    }
}

impl Collector for ClientCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = (self.0)() else {
            return Ok(());
        };
        let counters = [
            (
                "client_sessions",
                "Span sessions the client opened",
                s.sessions_opened,
            ),
            (
                "client_refusals",
                "Openings or steps servers refused without fault (full cache)",
                s.refusals,
            ),
            (
                "client_server_failures",
                "Servers that failed during a session or could not be reached",
                s.failures,
            ),
            (
                "client_failovers",
                "Hops of a running sequence moved to another server after theirs failed",
                s.failovers,
            ),
            ("client_bans", "Bans the client gave for faults", s.bans),
            (
                "client_checks",
                "Spot checks that compared a hop's outputs with another server's",
                s.checks,
            ),
            (
                "client_checks_passed",
                "Spot checks whose outputs agreed",
                s.checks_passed,
            ),
            (
                "client_checks_skipped",
                "Spot checks with no other server of the same blocks, or whose replay failed",
                s.checks_skipped,
            ),
            (
                "client_convictions",
                "Servers convicted by verified evidence",
                s.convictions,
            ),
        ];
        for (name, help, value) in counters {
            counter(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn batch_sizes_encode_as_a_valid_cumulative_histogram() {
        let mut stats = BatchStats::default();
        // Two batches of 1 row, three of 2, one of 3 (class <= 4), one of 600.
        stats.batch_sizes[0] = 2;
        stats.batch_sizes[1] = 3;
        stats.batch_sizes[2] = 1;
        stats.batch_sizes[BATCH_SIZE_BOUNDS.len()] = 1;
        stats.batches = 7;
        stats.rows = 2 + 6 + 3 + 600;
        let mut registry = Registry::default();
        registry
            .sub_registry_with_prefix("inference")
            .register_collector(Box::new(BatchCollector::new(move || Some(stats))));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "inference_server_batch_rows_sum 611.0",
            "inference_server_batch_rows_count 7",
            r#"inference_server_batch_rows_bucket{le="1.0"} 2"#,
            r#"inference_server_batch_rows_bucket{le="2.0"} 5"#,
            r#"inference_server_batch_rows_bucket{le="4.0"} 6"#,
            r#"inference_server_batch_rows_bucket{le="512.0"} 6"#,
            r#"inference_server_batch_rows_bucket{le="+Inf"} 7"#,
            "inference_server_tokens_total 611",
            "inference_server_tokens_per_second 0.0",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "no {line:?} in\n{text}"
            );
        }
    }
}
