//! Choosing servers: the cheapest chain of spans from one block to the end,
//! with no sockets (pure logic, tested alone).
//!
//! Blocks `0..=n` are the vertices; a server holding `start..end` is an
//! edge `start -> end` weighing its measured round-trip latency plus the
//! time of one decode step there ([`Candidate::cost_ms`]). Dijkstra finds
//! the cheapest path; ties break on the peer id so routes are
//! reproducible.
//!
//! # Load
//!
//! A server announces the decode rate a session sees under its current
//! load (measured over its recent batches, so it falls as sessions share
//! them) and how many sessions it had open. Sessions this client opened
//! there since are not in that figure yet: each adds [`LOAD_MARGINAL`] of
//! a step to the estimate. Between replicas of a span, new sessions thus
//! go to the server where a step is expected to be quickest, which spreads
//! them by load (Petals weighs servers by throughput alone and counts no
//! load, which a batching server needs).
//!
//! # Relayed servers
//!
//! A server behind NAT is reached through a relay until hole punching
//! (DCUtR) gives a direct connection. Its probe latency already counts the
//! relay's detour, but a relay's bandwidth is shared with its other
//! circuits, and a circuit ends after its time or byte limit, when the
//! session must fail over and replay. So its step time counts
//! [`RELAY_PENALTY`] times: between replicas of similar speed a direct one
//! wins, while a relayed server still serves a span no one else holds, or
//! one where it is much faster.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use hypertensor_p2p::PeerId;

/// A server that may carry part of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The server.
    pub peer: PeerId,
    /// First block it serves.
    pub start: usize,
    /// One past its last block.
    pub end: usize,
    /// Announced decode steps per second, under the announced load.
    pub throughput: f64,
    /// Sessions open on the server when it announced.
    pub sessions: u32,
    /// Sessions this client has open there now.
    pub own_sessions: u32,
    /// Measured round-trip time.
    pub latency: Duration,
    /// Reached through a relay (announced only relayed addresses).
    pub relayed: bool,
}

/// The share of one step a session not yet in a server's announced load
/// adds to each step there. Batching makes a session's marginal cost the
/// rows it adds to a batch, not a step of its own: on the default model a
/// row costs about a third of a lone step (prefill rate ≈ 3x decode rate);
/// a half errs toward spreading sessions.
pub const LOAD_MARGINAL: f64 = 0.5;

/// How many times a relayed server's step time counts (see "Relayed
/// servers" above).
pub const RELAY_PENALTY: f64 = 2.0;

impl Candidate {
    /// The edge weight in milliseconds: the round trip plus the expected
    /// step time, `1000 / throughput * (1 + LOAD_MARGINAL * unseen)` where
    /// `unseen` is how many more sessions this client has open there than
    /// the server announced, times [`RELAY_PENALTY`] if it is relayed.
    pub fn cost_ms(&self) -> f64 {
        let unseen = f64::from(self.own_sessions.saturating_sub(self.sessions));
        let penalty = if self.relayed { RELAY_PENALTY } else { 1.0 };
        self.latency.as_secs_f64() * 1e3
            + 1e3 / self.throughput.max(1e-9) * (1.0 + LOAD_MARGINAL * unseen) * penalty
    }
}

#[derive(Debug, PartialEq)]
struct Visit {
    cost: f64,
    block: usize,
}

impl Eq for Visit {}

impl Ord for Visit {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .cost
            .total_cmp(&self.cost)
            .then_with(|| other.block.cmp(&self.block))
    }
}

impl PartialOrd for Visit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The cheapest chain of `candidates` covering blocks `from..to` exactly
/// (each server used for its whole span), or `None` when none covers them.
pub fn shortest_route(candidates: &[Candidate], from: usize, to: usize) -> Option<Vec<Candidate>> {
    if from >= to {
        return Some(Vec::new());
    }
    let mut usable: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.start >= from && c.end <= to && c.start < c.end)
        .collect();
    usable.sort_by_key(|c| c.peer.to_bytes());
    let width = to - from + 1;
    let mut best = vec![f64::INFINITY; width];
    let mut via: Vec<Option<&Candidate>> = vec![None; width];
    best[0] = 0.0;
    let mut heap = BinaryHeap::from([Visit {
        cost: 0.0,
        block: from,
    }]);
    while let Some(Visit { cost, block }) = heap.pop() {
        if cost > best[block - from] {
            continue;
        }
        if block == to {
            break;
        }
        for c in usable.iter().filter(|c| c.start == block) {
            let next = cost + c.cost_ms();
            if next < best[c.end - from] {
                best[c.end - from] = next;
                via[c.end - from] = Some(c);
                heap.push(Visit {
                    cost: next,
                    block: c.end,
                });
            }
        }
    }
    let mut route = Vec::new();
    let mut block = to;
    while block != from {
        let hop = via[block - from]?;
        route.push(hop.clone());
        block = hop.start;
    }
    route.reverse();
    Some(route)
}

/// The most positions a sequence can reserve on every hop of some route
/// covering `from..to`, given each candidate's free cache `free[i]`, capped
/// at `cap`; `None` when no route covers the blocks at all. A route of
/// servers each with at least `r` free tokens exists for every
/// `r <= answer`, so the answer is the largest free value (or `cap`) at
/// which the servers that have that much still cover the blocks.
pub fn largest_reservation(
    candidates: &[Candidate],
    free: &[u64],
    from: usize,
    to: usize,
    cap: u64,
) -> Option<u64> {
    let mut levels: Vec<u64> = free.iter().map(|&f| f.min(cap)).collect();
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    levels.into_iter().find(|&level| {
        let holding: Vec<Candidate> = candidates
            .iter()
            .zip(free)
            .filter(|(_, f)| (**f).min(cap) >= level)
            .map(|(c, _)| c.clone())
            .collect();
        shortest_route(&holding, from, to).is_some()
    })
}

/// The `len` consecutive blocks of `0..n_blocks` whose announced
/// throughput (summed over the servers holding each block) is lowest: where
/// a new server helps most (SPEC §5). The first such window wins ties.
pub fn weakest_span(
    servers: &[(usize, usize, f64)],
    n_blocks: usize,
    len: usize,
) -> std::ops::Range<usize> {
    let len = len.clamp(1, n_blocks.max(1));
    let mut per_block = vec![0.0; n_blocks];
    for &(start, end, throughput) in servers {
        for t in per_block.iter_mut().take(end.min(n_blocks)).skip(start) {
            *t += throughput;
        }
    }
    let mut best = 0;
    let mut best_sum = f64::INFINITY;
    for start in 0..=n_blocks.saturating_sub(len) {
        let sum: f64 = per_block[start..start + len].iter().sum();
        if sum < best_sum {
            best_sum = sum;
            best = start;
        }
    }
    best..(best + len).min(n_blocks)
}

#[cfg(test)]
mod tests {
    #[test]
    fn new_servers_take_the_weakest_blocks() {
        assert_eq!(weakest_span(&[], 30, 10), 0..10);
        assert_eq!(weakest_span(&[(0, 10, 50.0)], 30, 10), 10..20);
        assert_eq!(
            weakest_span(&[(0, 10, 50.0), (10, 20, 50.0), (20, 30, 5.0)], 30, 10),
            20..30
        );
        assert_eq!(weakest_span(&[(0, 30, 50.0)], 30, 40), 0..30);
    }

    use super::*;

    fn cand(seed: u8, start: usize, end: usize, throughput: f64, latency_ms: u64) -> Candidate {
        let key = hypertensor_primitives::Keypair::dev(&format!("server{seed}"));
        Candidate {
            peer: hypertensor_p2p::record::peer_id_of(&key),
            start,
            end,
            throughput,
            sessions: 0,
            own_sessions: 0,
            latency: Duration::from_millis(latency_ms),
            relayed: false,
        }
    }

    #[test]
    fn a_relayed_replica_loses_to_a_direct_one_but_still_serves_when_much_faster() {
        let direct = cand(1, 0, 30, 50.0, 10);
        let mut relayed = cand(2, 0, 30, 50.0, 10);
        relayed.relayed = true;
        let servers = [relayed.clone(), direct.clone()];
        let route = shortest_route(&servers, 0, 30).unwrap();
        assert_eq!(route[0].peer, direct.peer);
        // Four times the throughput outweighs the penalty.
        relayed.throughput = 200.0;
        let route = shortest_route(&[relayed.clone(), direct], 0, 30).unwrap();
        assert_eq!(route[0].peer, relayed.peer);
        // The only server of a span serves it, relayed or not.
        assert_eq!(shortest_route(&[relayed], 0, 30).unwrap().len(), 1);
    }

    /// Routes `n` new sessions of one client over `servers` (whole-model
    /// replicas) in turn; returns how many each got.
    fn place(servers: &mut [Candidate], n: usize) -> Vec<u32> {
        let mut placed = vec![0; servers.len()];
        for _ in 0..n {
            let route = shortest_route(servers, 0, 30).unwrap();
            let i = servers
                .iter()
                .position(|c| c.peer == route[0].peer)
                .unwrap();
            placed[i] += 1;
            servers[i].own_sessions += 1;
        }
        placed
    }

    #[test]
    fn sessions_spread_over_replicas_by_load() {
        // Two replicas of the whole model, equally fast and near.
        let mut servers = [cand(0, 0, 30, 100.0, 1), cand(1, 0, 30, 100.0, 1)];
        assert_eq!(
            place(&mut servers, 8),
            [4, 4],
            "a client's own new sessions alternate"
        );
        // A server announcing a slower step under its load gets fewer.
        let mut servers = [cand(0, 0, 30, 100.0, 1), cand(1, 0, 30, 50.0, 2)];
        servers[1].sessions = 6;
        servers[1].own_sessions = 6;
        // Estimates: server 0 at 1 + 10 * (1 + n/2) ms = 11, 16, 21, 26,
        // 31, ...; server 1 at 2 + 20 * (1 + m/2) = 22, 32, ... (its six
        // announced sessions are already in its rate).
        assert_eq!(place(&mut servers, 6), [5, 1]);
    }

    fn spans(route: &[Candidate]) -> Vec<(usize, usize)> {
        route.iter().map(|c| (c.start, c.end)).collect()
    }

    #[test]
    fn picks_the_cheapest_cover() {
        let cands = [
            cand(0, 0, 10, 100.0, 5),
            cand(1, 10, 20, 100.0, 5),
            cand(2, 20, 30, 100.0, 5),
            // One server for 10..30 beats two when it is fast enough.
            cand(3, 10, 30, 90.0, 5),
            // A slow server is avoided.
            cand(4, 0, 10, 1.0, 1),
        ];
        let route = shortest_route(&cands, 0, 30).unwrap();
        assert_eq!(spans(&route), vec![(0, 10), (10, 30)]);
        assert_eq!(route[0].peer, cands[0].peer);
        // High latency makes the pair cheaper again.
        let mut slow = cands.clone();
        slow[3].latency = Duration::from_millis(100);
        assert_eq!(
            spans(&shortest_route(&slow, 0, 30).unwrap()),
            vec![(0, 10), (10, 20), (20, 30)]
        );
        // Routing from the middle uses only servers inside the range.
        assert_eq!(
            spans(&shortest_route(&cands, 20, 30).unwrap()),
            vec![(20, 30)]
        );
    }

    #[test]
    fn the_largest_reservation_is_the_weakest_hop_of_the_roomiest_route() {
        let cands = [
            cand(0, 0, 10, 100.0, 5),
            cand(1, 10, 30, 100.0, 5),
            cand(2, 0, 10, 100.0, 5),
            cand(3, 10, 30, 100.0, 5),
        ];
        // Routes: {0,1} holds min(4000, 500) = 500, {2,3} min(300, 2000) =
        // 300, {0,3} min(4000, 2000) = 2000: the best.
        let free = [4000, 500, 300, 2000];
        assert_eq!(largest_reservation(&cands, &free, 0, 30, 8192), Some(2000));
        // The cap bounds it.
        assert_eq!(largest_reservation(&cands, &free, 0, 30, 1024), Some(1024));
        // Full servers still form a route, with room for nothing.
        assert_eq!(
            largest_reservation(&cands, &[0, 0, 0, 0], 0, 30, 8192),
            Some(0)
        );
        // No cover at all.
        assert_eq!(
            largest_reservation(&cands[..1], &free[..1], 0, 30, 8192),
            None
        );
    }

    #[test]
    fn a_gap_means_no_route() {
        let cands = [cand(0, 0, 10, 100.0, 5), cand(2, 20, 30, 100.0, 5)];
        assert_eq!(shortest_route(&cands, 0, 30), None);
        assert_eq!(shortest_route(&[], 0, 30), None);
        assert_eq!(shortest_route(&[], 30, 30), Some(vec![]));
    }
}
