//! Before a hoster announces itself: can others dial it? AutoNAT asks the
//! peers it is connected to; behind NAT the hoster reserves a slot on a
//! relay (its bootstrap peers first, then any connected peer offering
//! one) and announces the relayed address instead of its own (which no
//! one could dial). While it runs, [`keep_reachable`] reserves a slot
//! anew when the relay goes away or AutoNAT later finds the node behind
//! NAT. See `docs/inference.md`, "Behind NAT".

use std::time::Duration;

use hypertensor_p2p::nat::{is_loopback, is_relayed};
use hypertensor_p2p::{Client, Multiaddr, Reachability};

use crate::error::{NodeError, NodeResult};

/// Longest a hoster waits for AutoNAT's answer: a probe of an address
/// behind NAT fails only when the prober's dial times out (10 s).
pub const REACHABILITY_WAIT: Duration = Duration::from_secs(30);
/// Longest a hoster behind NAT keeps asking its bootstrap peers for a
/// relay reservation (a relay offers one only once it knows it is itself
/// reachable, which its own AutoNAT finds out within seconds).
pub const RELAY_WAIT: Duration = Duration::from_secs(60);
/// Pause between two rounds of relay requests.
const RELAY_RETRY: Duration = Duration::from_secs(2);
/// How often a running hoster checks it is still reachable.
pub const REACH_CHECK: Duration = Duration::from_secs(2);

/// How others reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Nothing checked: it listens on loopback only, or knows no peer
    /// that could probe it.
    Unchecked,
    /// A peer dialled it back at this address.
    Direct(Multiaddr),
    /// AutoNAT could not decide in time; its own addresses are announced.
    Unknown,
    /// Behind NAT: dialled through this relayed address.
    Relayed(Multiaddr),
}

/// Finds out whether others can dial this node and, behind NAT, listens
/// through a bootstrap peer's relay. Fails if it is behind NAT and no
/// bootstrap peer would relay for it.
pub async fn make_reachable(
    p2p: &Client,
    listen: &[Multiaddr],
    bootstrap: &[Multiaddr],
) -> NodeResult<Reach> {
    if bootstrap.is_empty() || listen.iter().all(is_loopback) {
        return Ok(Reach::Unchecked);
    }
    match p2p.wait_reachability(REACHABILITY_WAIT).await? {
        Reachability::Public(addr) => Ok(Reach::Direct(addr)),
        Reachability::Unknown => {
            tracing::warn!(
                "no peer could tell whether this node is reachable; announcing its own addresses"
            );
            Ok(Reach::Unknown)
        }
        Reachability::Private => through_relay(p2p, bootstrap).await,
    }
}

/// Keeps a hoster reachable while it runs: whenever AutoNAT says it is
/// behind NAT and no relay listens for it (the relay went away, or the
/// network changed under it), it reserves a slot on another relay and
/// calls `readdressed` (which re-announces). Runs until the swarm stops.
pub async fn keep_reachable(
    p2p: Client,
    bootstrap: Vec<Multiaddr>,
    readdressed: impl Fn() + Send + 'static,
) -> NodeResult<()> {
    loop {
        tokio::time::sleep(REACH_CHECK).await;
        if p2p.reachability().await? != Reachability::Private {
            continue;
        }
        if p2p.listen_addrs().await?.iter().any(is_relayed) {
            continue;
        }
        tracing::warn!("behind NAT and no relay listens for this node; reserving a slot anew");
        match through_relay(&p2p, &bootstrap).await {
            Ok(Reach::Relayed(addr)) => {
                tracing::info!(%addr, "reachable through a relay again");
                readdressed();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "no relay accepted this node; retrying"),
        }
    }
}

async fn through_relay(p2p: &Client, bootstrap: &[Multiaddr]) -> NodeResult<Reach> {
    let deadline = tokio::time::Instant::now() + RELAY_WAIT;
    let mut last_error = String::from("no peer offers a relay");
    loop {
        // Bootstrap peers first, then whoever else offers a relay.
        let mut candidates = bootstrap.to_vec();
        for relay in p2p.relay_candidates().await? {
            if !candidates.contains(&relay) {
                candidates.push(relay);
            }
        }
        for relay in &candidates {
            match p2p.listen_via_relay(relay.clone()).await {
                Ok(addr) => return Ok(Reach::Relayed(addr)),
                Err(e) => {
                    tracing::debug!(%relay, error = %e, "no relay reservation");
                    last_error = format!("{relay}: {e}");
                }
            }
        }
        if tokio::time::Instant::now() + RELAY_RETRY >= deadline {
            return Err(NodeError::Unreachable(last_error));
        }
        tokio::time::sleep(RELAY_RETRY).await;
    }
}
