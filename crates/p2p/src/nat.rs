//! Serving from behind NAT: AutoNAT tells a node whether others can dial
//! it; nodes others can dial offer a bounded circuit relay (v2); a node
//! that cannot be dialled listens through such a relay and announces the
//! relayed address; DCUtR then tries to replace each relayed connection
//! with a direct one (hole punching).
//!
//! The relay service switches itself on only once AutoNAT (or the
//! operator's `announce` addresses) confirmed an external address, so a
//! node behind NAT never offers to relay.

use std::num::NonZeroU32;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, autonat, relay};

/// Whether this node can be dialled by others, as AutoNAT last found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    /// Not probed yet, or no peer could probe it.
    Unknown,
    /// A peer dialled this address of ours back.
    Public(Multiaddr),
    /// Peers tried our addresses and reached none.
    Private,
}

impl From<autonat::NatStatus> for Reachability {
    fn from(status: autonat::NatStatus) -> Self {
        match status {
            autonat::NatStatus::Public(addr) => Reachability::Public(addr),
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        }
    }
}

/// Reservations a relay holds at once (one per node behind NAT).
const MAX_RESERVATIONS: usize = 128;
/// Relayed connections at once, and per peer behind NAT.
const MAX_CIRCUITS: usize = 64;
const MAX_CIRCUITS_PER_PEER: usize = 16;
/// A relayed connection lasts at most this long and carries at most this
/// much; long sessions are then re-routed (failover replays them) unless
/// hole punching made them direct first. A session of the default model
/// moves about 2.3 KB of hidden state per token each way, so a circuit
/// carries well over a hundred thousand tokens.
const MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(30 * 60);
const MAX_CIRCUIT_BYTES: u64 = 1 << 30;

/// The relay service every dialable node offers.
pub(crate) fn relay_config() -> relay::Config {
    let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    relay::Config {
        max_reservations: MAX_RESERVATIONS,
        max_reservations_per_peer: 2,
        reservation_duration: Duration::from_secs(60 * 60),
        reservation_rate_limiters: Vec::new(),
        max_circuits: MAX_CIRCUITS,
        max_circuits_per_peer: MAX_CIRCUITS_PER_PEER,
        max_circuit_duration: MAX_CIRCUIT_DURATION,
        max_circuit_bytes: MAX_CIRCUIT_BYTES,
        circuit_src_rate_limiters: Vec::new(),
    }
    // A restarting node re-reserves; a client opens one circuit per peer
    // it routes through. Both stay far below these.
    .reservation_rate_per_peer(nonzero(10), Duration::from_secs(60))
    .circuit_src_per_peer(nonzero(30), Duration::from_secs(60))
}

/// AutoNAT probing fast enough to decide before a server announces:
/// the first probe a second after start, retried every few seconds until
/// two agree, then every five minutes. Private addresses count (a LAN or
/// a test lab is a network too).
pub(crate) fn autonat_config() -> autonat::Config {
    autonat::Config {
        boot_delay: Duration::from_secs(1),
        retry_interval: Duration::from_secs(4),
        refresh_interval: Duration::from_secs(5 * 60),
        throttle_server_period: Duration::from_secs(2),
        confidence_max: 2,
        only_global_ips: false,
        ..autonat::Config::default()
    }
}

/// Whether `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Whether `addr` is on a loopback interface (where no NAT can sit
/// between peers, so there is nothing to probe).
pub fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// The address to listen on through `relay` (which must name its peer).
pub(crate) fn circuit_through(relay: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let peer = relay.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })?;
    Some((peer, relay.clone().with(Protocol::P2pCircuit)))
}

/// The addresses to announce out of what we listen on: the relayed ones
/// alone if there are any (the others cannot be dialled), else all.
/// Returns them and whether they are relayed.
pub fn announceable(listening: Vec<Multiaddr>) -> (Vec<Multiaddr>, bool) {
    let relayed: Vec<Multiaddr> = listening
        .iter()
        .filter(|a| is_relayed(a))
        .cloned()
        .collect();
    if relayed.is_empty() {
        (listening, false)
    } else {
        (relayed, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_addresses_replace_the_undialable_ones_in_announcements() {
        let direct: Multiaddr = "/ip4/10.77.0.3/tcp/4001".parse().unwrap();
        let relay: Multiaddr =
            "/ip4/10.77.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                .parse()
                .unwrap();
        let (_, circuit) = circuit_through(&relay).unwrap();
        assert!(is_relayed(&circuit) && !is_relayed(&relay));
        assert_eq!(
            announceable(vec![direct.clone()]),
            (vec![direct.clone()], false)
        );
        assert_eq!(
            announceable(vec![direct, circuit.clone()]),
            (vec![circuit], true)
        );
        assert!(circuit_through(&"/ip4/10.77.0.1/tcp/4001".parse().unwrap()).is_none());
        assert!(is_loopback(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()));
    }
}
