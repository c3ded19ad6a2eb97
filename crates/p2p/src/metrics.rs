//! The P2P layer's Prometheus metrics: connected peers, DHT operations by
//! kind and result, entries accepted and rejected (by reason), hole
//! punches, and the latency of signed RPC requests by method.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::validate::RejectKind;

/// A label set of `(name, value)` pairs.
type Labels = Vec<(&'static str, &'static str)>;

/// What the P2P layer counts; shared by the event loop and the client
/// handles. The metrics count whether or not they are registered (tests
/// read them through the accessors); [`Metrics::register`] exposes them.
#[derive(Debug, Clone)]
pub struct Metrics {
    peers: Gauge,
    rejected: Family<Labels, Counter>,
    accepted: Counter,
    hole_punches: Counter,
    dht_operations: Family<Labels, Counter>,
    rpc_latency: Family<Vec<(&'static str, String)>, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            peers: Gauge::default(),
            rejected: Family::default(),
            accepted: Counter::default(),
            hole_punches: Counter::default(),
            dht_operations: Family::default(),
            rpc_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
        }
    }
}

/// The label value of a rejection reason.
fn reason_label(kind: RejectKind) -> &'static str {
    match kind {
        RejectKind::BadSignature => "bad_signature",
        RejectKind::NotOwnable => "not_ownable",
        RejectKind::UnknownKey => "unknown_key",
        RejectKind::BadValue => "bad_value",
        RejectKind::Oversized => "oversized",
        RejectKind::Expired => "expired",
        RejectKind::TtlTooLong => "ttl_too_long",
        RejectKind::OutOfPhase => "out_of_phase",
        RejectKind::WriteLimit => "write_limit",
        RejectKind::NotStaked => "not_staked",
    }
}

/// A DHT operation, for counting.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DhtOp {
    /// A write of our own entry.
    Put,
    /// A write of an entry signed elsewhere.
    Publish,
    /// A read of a key across the network.
    Get,
}

impl Metrics {
    /// Registers the metrics under the prefix `p2p`.
    pub fn register(&self, registry: &mut Registry) {
        let p2p = registry.sub_registry_with_prefix("p2p");
        p2p.register("peers", "Peers connected now", self.peers.clone());
        p2p.register(
            "dht_rejected",
            "DHT entries refused, by reason",
            self.rejected.clone(),
        );
        p2p.register(
            "dht_accepted",
            "DHT entries from other peers accepted into the local store",
            self.accepted.clone(),
        );
        p2p.register(
            "dht_operations",
            "DHT reads and writes this node started, by operation and result",
            self.dht_operations.clone(),
        );
        p2p.register(
            "hole_punches",
            "Relayed connections that hole punching replaced with direct ones",
            self.hole_punches.clone(),
        );
        p2p.register(
            "rpc_request_seconds",
            "Time from sending a signed RPC request to its verified answer, by method",
            self.rpc_latency.clone(),
        );
    }

    pub(crate) fn reject(&self, kind: RejectKind) {
        self.rejected
            .get_or_create(&vec![("reason", reason_label(kind))])
            .inc();
    }

    pub(crate) fn accept(&self) {
        self.accepted.inc();
    }

    pub(crate) fn hole_punched(&self) {
        self.hole_punches.inc();
    }

    pub(crate) fn set_peers(&self, peers: usize) {
        self.peers.set(peers as i64);
    }

    pub(crate) fn dht_operation(&self, op: DhtOp, ok: bool) {
        let op = match op {
            DhtOp::Put => "put",
            DhtOp::Publish => "publish",
            DhtOp::Get => "get",
        };
        let result = if ok { "ok" } else { "error" };
        self.dht_operations
            .get_or_create(&vec![("op", op), ("result", result)])
            .inc();
    }

    pub(crate) fn rpc_answered(&self, method: &str, elapsed: Duration) {
        self.rpc_latency
            .get_or_create(&vec![("method", method.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// Entries rejected for `kind` so far.
    pub fn rejected(&self, kind: RejectKind) -> u64 {
        self.rejected
            .get(&vec![("reason", reason_label(kind))])
            .map_or(0, |c| c.get())
    }

    /// All rejections so far.
    pub fn rejected_total(&self) -> u64 {
        RejectKind::ALL.iter().map(|k| self.rejected(*k)).sum()
    }

    /// Entries accepted into the local store from other peers.
    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    /// Relayed connections that hole punching (DCUtR) replaced with
    /// direct ones.
    pub fn hole_punches(&self) -> u64 {
        self.hole_punches.get()
    }

    /// Peers connected now.
    pub fn peers(&self) -> i64 {
        self.peers.get()
    }
}
