//! What the inference benches share.

use std::sync::Arc;

use hypertensor_inference::{AdmitAll, p2p_config};
use hypertensor_p2p::Multiaddr;
use hypertensor_primitives::{H256, Keypair};

/// The model's name in the benches' DHT keys.
pub(crate) const MODEL: &str = "smollm2";

/// A P2P configuration for bench node `name` on loopback, joining through
/// `boot` when given, with every peer admitted.
pub(crate) fn loopback_config(name: &str, boot: Option<&Multiaddr>) -> hypertensor_p2p::Config {
    let mut cfg = p2p_config(
        Keypair::dev(name),
        1,
        H256([3; 32]),
        MODEL,
        Arc::new(AdmitAll),
    );
    cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
    cfg.bootstrap = boot.into_iter().cloned().collect();
    cfg
}
