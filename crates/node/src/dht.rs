//! The consensus loop's reads and writes of the DHT, with their byte
//! counts (what the benchmark reports).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hypertensor_p2p::{Client, now_ms};
use hypertensor_primitives::PeerId;

use crate::stake::chain_peer_id;

/// What one node's consensus loop did, counted since it started.
#[derive(Debug, Default)]
pub struct LoopMetrics {
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
    compute_ns: AtomicU64,
}

impl LoopMetrics {
    /// Value bytes this node stored (each store is then replicated to the
    /// key's closest peers by the DHT).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }
    /// Encoded dictionary bytes this node's reads returned.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
    /// Records stored.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
    /// Keys read.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
    /// Time spent computing sketches and scores.
    pub fn compute_time(&self) -> Duration {
        Duration::from_nanos(self.compute_ns.load(Ordering::Relaxed))
    }
    pub(crate) fn add_compute(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.compute_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// Typed access to the consensus keys of one subnet's DHT.
#[derive(Clone)]
pub(crate) struct ConsensusDht {
    pub(crate) p2p: Client,
    pub(crate) metrics: Arc<LoopMetrics>,
    pub(crate) ttl: Duration,
}

impl ConsensusDht {
    /// Stores our entry `value` under `key`, living `ttl`.
    pub(crate) async fn write(&self, key: &str, value: Vec<u8>) -> hypertensor_p2p::Result<()> {
        let len = value.len() as u64;
        let expiration = now_ms() + u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX / 2);
        self.p2p.store(key, value, expiration).await?;
        self.metrics.writes.fetch_add(1, Ordering::Relaxed);
        self.metrics.bytes_written.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Every entry under `key`, by its writer's chain peer id.
    pub(crate) async fn read(
        &self,
        key: &str,
    ) -> hypertensor_p2p::Result<BTreeMap<PeerId, Vec<u8>>> {
        let dict = self.p2p.get(key).await?;
        self.metrics.reads.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .bytes_read
            .fetch_add(dict.encode().len() as u64, Ordering::Relaxed);
        Ok(dict
            .entries()
            .filter_map(|e| Some((chain_peer_id(&e.subkey).ok()?, e.value.clone())))
            .collect())
    }
}
