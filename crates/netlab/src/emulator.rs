//! The link emulator: one thread reads every host's TUN device, holds each
//! IPv4 packet for its links' delay, and writes it into the destination
//! host's device.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Link;
use crate::nat::Nat;

/// Longest sleep between checks of the stop flag.
const TICK: Duration = Duration::from_millis(20);

/// A packet waiting out its delay.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    due: Instant,
    /// Arrival order, so packets due at the same instant keep it.
    seq: u64,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

/// A small deterministic generator for jitter and loss (xorshift64*).
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, max]`.
    fn up_to(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos() as u64;
        if nanos == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.next() % (nanos + 1))
        }
    }

    /// True with probability `per_million` / 1e6.
    fn lost(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.next() % 1_000_000 < u64::from(per_million)
    }
}

/// Forwards packets among `devices` (host `i` has `addresses[i]`, or is
/// behind `nats[i]`) until `stop` is set.
pub(crate) fn run(
    devices: Vec<OwnedFd>,
    addresses: Vec<Ipv4Addr>,
    nats: Arc<Mutex<Vec<Option<Nat>>>>,
    links: Arc<Mutex<Vec<Link>>>,
    stop: Arc<AtomicBool>,
) {
    let mut queue: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();
    // The latest delivery time per (from, to): one path keeps its order.
    let mut last_due: HashMap<(usize, usize), Instant> = HashMap::new();
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let mut seq = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut polls: Vec<libc::pollfd> = devices
        .iter()
        .map(|d| libc::pollfd {
            fd: d.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.peek().is_some_and(|p| p.0.due <= now) {
            let Some(Reverse(p)) = queue.pop() else { break };
            let both_up = {
                let l = links.lock().unwrap_or_else(|e| e.into_inner());
                l[p.from].up && l[p.to].up
            };
            if both_up {
                // A full device queue drops the packet, as a full link would.
                // SAFETY: writing an initialised buffer to an open fd.
                let _ = unsafe {
                    libc::write(
                        devices[p.to].as_raw_fd(),
                        p.bytes.as_ptr().cast(),
                        p.bytes.len(),
                    )
                };
            }
        }
        let wait = queue
            .peek()
            .map_or(TICK, |p| p.0.due.saturating_duration_since(now))
            .min(TICK);
        let timeout = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
        };
        // SAFETY: `polls` is a valid array of pollfd for its length.
        let ready = unsafe {
            libc::ppoll(
                polls.as_mut_ptr(),
                polls.len() as libc::nfds_t,
                &timeout,
                std::ptr::null(),
            )
        };
        if ready <= 0 {
            continue;
        }
        for (from, poll) in polls.iter_mut().enumerate() {
            if poll.revents & libc::POLLIN == 0 {
                continue;
            }
            poll.revents = 0;
            loop {
                // SAFETY: reading into a buffer of its own length.
                let n = unsafe { libc::read(poll.fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                let packet = &mut buf[..n as usize];
                let Some(to) = route(packet, from, &addresses, &nats) else {
                    continue;
                };
                let arrived = Instant::now();
                let (source, target) = {
                    let l = links.lock().unwrap_or_else(|e| e.into_inner());
                    (l[from], l[to])
                };
                if !source.up
                    || !target.up
                    || dice.lost(source.loss_per_million)
                    || dice.lost(target.loss_per_million)
                {
                    continue;
                }
                let delay = source.delay
                    + target.delay
                    + dice.up_to(source.jitter)
                    + dice.up_to(target.jitter);
                let path = last_due.entry((from, to)).or_insert(arrived);
                let due = (arrived + delay).max(*path);
                *path = due;
                seq += 1;
                queue.push(Reverse(InFlight {
                    due,
                    seq,
                    from,
                    to,
                    bytes: packet.to_vec(),
                }));
            }
        }
    }
}

/// The host a packet from host `from` goes to, after the NATs on its way
/// rewrote it; `None` if it goes nowhere (no such host, a private address
/// behind NAT, or a router dropped it).
fn route(
    packet: &mut [u8],
    from: usize,
    addresses: &[Ipv4Addr],
    nats: &Mutex<Vec<Option<Nat>>>,
) -> Option<usize> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let mut nats = nats.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(nat) = nats[from].as_mut()
        && !nat.outbound(packet)
    {
        return None;
    }
    let to = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    if let Some(host) = addresses.iter().position(|a| *a == to) {
        return nats[host].is_none().then_some(host);
    }
    let host = nats
        .iter()
        .position(|n| n.as_ref().is_some_and(|n| n.public() == to))?;
    nats[host].as_mut()?.inbound(packet).then_some(host)
}
