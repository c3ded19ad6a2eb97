//! A home router's NAT, in the link emulator: a host behind NAT keeps its
//! own address (unreachable from the other hosts), and its packets leave
//! with the router's public address instead, as Linux's `MASQUERADE`
//! rewrites them.
//!
//! Mapping is port-preserving and endpoint-independent (a source port keeps
//! its number on the public address, whoever it talks to); filtering is
//! address-and-port dependent (a packet in is let through only from an
//! address and port the host has sent to from that port). That is the
//! behaviour of a typical home router with connection tracking, and it is
//! what hole punching has to get through: a peer's packets come in only
//! once the host itself has sent to that peer.

use std::collections::HashSet;
use std::net::Ipv4Addr;

const TCP: u8 = 6;
const UDP: u8 = 17;

/// One host's NAT: its private and public addresses and the flows it has
/// opened.
#[derive(Debug)]
pub(crate) struct Nat {
    private: Ipv4Addr,
    public: Ipv4Addr,
    /// (protocol, local port, remote address, remote port) the host has
    /// sent to: packets back along these are let in.
    opened: HashSet<(u8, u16, Ipv4Addr, u16)>,
    /// Packets dropped at the router (unsolicited, or not TCP/UDP).
    pub(crate) dropped: u64,
}

/// The fields of an IPv4 TCP or UDP packet that NAT looks at.
struct Flow {
    protocol: u8,
    source: Ipv4Addr,
    source_port: u16,
    destination: Ipv4Addr,
    destination_port: u16,
}

impl Nat {
    pub(crate) fn new(private: Ipv4Addr, public: Ipv4Addr) -> Nat {
        Nat {
            private,
            public,
            opened: HashSet::new(),
            dropped: 0,
        }
    }

    /// The router's public address.
    pub(crate) fn public(&self) -> Ipv4Addr {
        self.public
    }

    /// Rewrites a packet the host sends out; false if it must be dropped.
    pub(crate) fn outbound(&mut self, packet: &mut [u8]) -> bool {
        let Some(flow) = flow(packet) else {
            self.dropped += 1;
            return false;
        };
        if flow.source != self.private {
            self.dropped += 1;
            return false;
        }
        self.opened.insert((
            flow.protocol,
            flow.source_port,
            flow.destination,
            flow.destination_port,
        ));
        rewrite(packet, 12, self.public);
        true
    }

    /// Rewrites a packet sent to the public address; false if the host
    /// never opened its flow, and it must be dropped.
    pub(crate) fn inbound(&mut self, packet: &mut [u8]) -> bool {
        let Some(flow) = flow(packet) else {
            self.dropped += 1;
            return false;
        };
        let key = (
            flow.protocol,
            flow.destination_port,
            flow.source,
            flow.source_port,
        );
        if flow.destination != self.public || !self.opened.contains(&key) {
            self.dropped += 1;
            return false;
        }
        rewrite(packet, 16, self.private);
        true
    }
}

/// The flow of an unfragmented IPv4 TCP or UDP packet.
fn flow(packet: &[u8]) -> Option<Flow> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let protocol = packet[9];
    let fragmented = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
    if fragmented || !(protocol == TCP || protocol == UDP) || packet.len() < header + 8 {
        return None;
    }
    let port = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    Some(Flow {
        protocol,
        source: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        source_port: port(header),
        destination: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
        destination_port: port(header + 2),
    })
}

/// Puts `addr` at byte `at` of the IP header (12: source, 16:
/// destination) and recomputes the IP and TCP/UDP checksums.
fn rewrite(packet: &mut [u8], at: usize, addr: Ipv4Addr) {
    packet[at..at + 4].copy_from_slice(&addr.octets());
    let header = usize::from(packet[0] & 0x0f) * 4;
    packet[10..12].copy_from_slice(&[0, 0]);
    let ip_sum = checksum(0, &packet[..header]);
    packet[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let protocol = packet[9];
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    let at_sum = header + if protocol == TCP { 16 } else { 6 };
    if total < at_sum + 2 {
        return;
    }
    if protocol == UDP && packet[at_sum..at_sum + 2] == [0, 0] {
        return; // no checksum was sent
    }
    packet[at_sum..at_sum + 2].copy_from_slice(&[0, 0]);
    let segment_len = (total - header) as u32;
    let mut pseudo = 0u32;
    for pair in packet[12..20].chunks(2) {
        pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    pseudo += u32::from(protocol) + segment_len;
    let mut sum = checksum(pseudo, &packet[header..total]);
    if protocol == UDP && sum == 0 {
        sum = 0xffff;
    }
    packet[at_sum..at_sum + 2].copy_from_slice(&sum.to_be_bytes());
}

/// The Internet checksum (RFC 1071) of `bytes`, starting from `initial`.
fn checksum(initial: u32, bytes: &[u8]) -> u16 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP packet from `src:sport` to `dst:dport` carrying `payload`,
    /// with correct checksums.
    fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = UDP;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[26..28].copy_from_slice(&[0xab, 0xcd]); // nonzero: recomputed below
        p[28..].copy_from_slice(payload);
        rewrite(&mut p, 12, src);
        p
    }

    /// True if every checksum of `p` verifies.
    fn verifies(p: &[u8]) -> bool {
        let mut pseudo = 0u32;
        for pair in p[12..20].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        pseudo += u32::from(p[9]) + (p.len() - 20) as u32;
        checksum(0, &p[..20]) == 0 && checksum(pseudo, &p[20..]) == 0
    }

    #[test]
    fn only_flows_the_host_opened_come_back_in_and_checksums_stay_valid() {
        let private = Ipv4Addr::new(10, 77, 0, 1);
        let public = Ipv4Addr::new(10, 77, 1, 1);
        let peer = Ipv4Addr::new(10, 77, 0, 2);
        let mut nat = Nat::new(private, public);

        // Unsolicited: dropped.
        let mut unsolicited = udp(peer, 5000, public, 4001, b"hello");
        assert!(!nat.inbound(&mut unsolicited));

        let mut out = udp(private, 4001, peer, 5000, b"odd payload");
        assert!(nat.outbound(&mut out));
        assert_eq!(
            out[12..16],
            public.octets(),
            "leaves with the public address"
        );
        assert_eq!(out[20..22], 4001u16.to_be_bytes(), "port preserved");
        assert!(verifies(&out));

        let mut reply = udp(peer, 5000, public, 4001, b"reply");
        assert!(nat.inbound(&mut reply));
        assert_eq!(reply[16..20], private.octets());
        assert!(verifies(&reply));

        // The same peer from another port, or another peer: dropped.
        assert!(!nat.inbound(&mut udp(peer, 5001, public, 4001, b"x")));
        let other = Ipv4Addr::new(10, 77, 0, 3);
        assert!(!nat.inbound(&mut udp(other, 5000, public, 4001, b"x")));
        assert_eq!(nat.dropped, 3);
    }
}
