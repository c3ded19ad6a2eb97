//! Several hosts on one Linux machine, for tests of what crosses a real
//! network: each host is a network namespace whose only link is a TUN
//! device, and one userspace forwarder carries every IPv4 packet between
//! them, after the delay, jitter and loss each host's link is set to.
//!
//! The kernel this project runs on has no `netem` qdisc, so delay cannot
//! come from `tc`; a TUN forwarder also needs nothing beyond `ip` from
//! iproute2. Root is required (namespaces and TUN devices);
//! [`Lab::unavailable`] says why a lab cannot be made, so a test can skip
//! with that message.
//!
//! A host can sit behind NAT ([`Lab::with_nat`]): it keeps its own
//! address, which no other host can reach, and what it sends leaves from
//! its router's public address ([`Lab::public_ip`]), which lets in only
//! replies to flows the host opened (see the `nat` module).
//!
//! ```no_run
//! use std::time::Duration;
//! use hypertensor_netlab::{Lab, Link};
//!
//! let lab = Lab::new(&["a", "b"], Link::round_trip(Duration::from_millis(50))).unwrap();
//! let status = lab.command("a", "ping").args(["-c1", &lab.ip("b").to_string()]).status();
//! ```

mod emulator;
mod namespace;
mod nat;
mod tun;

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use namespace::in_namespace;

/// What went wrong making or using a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// This machine or user cannot make a lab (the reason is the message).
    #[error("network lab unavailable: {0}")]
    Unavailable(String),
    /// A command that sets the lab up failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// No host of that name in this lab.
    #[error("no host named {0:?} in this lab")]
    UnknownHost(String),
}

/// Results of lab operations.
pub type Result<T> = std::result::Result<T, LabError>;

/// One host's link to the rest of the lab. A packet from host A to host B
/// waits `A.delay + B.delay` (plus each side's jitter), so the round trip
/// between them is `2 (A.delay + B.delay)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// One-way delay this link adds to every packet through it.
    pub delay: Duration,
    /// Up to this much more, uniformly at random, per packet (packets of
    /// one pair of hosts still arrive in order, as on one path).
    pub jitter: Duration,
    /// Packets lost out of every million through this link.
    pub loss_per_million: u32,
    /// Whether the link carries anything; a cut link drops every packet.
    pub up: bool,
}

impl Link {
    /// A link adding no delay, jitter or loss.
    pub const IDEAL: Link = Link {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss_per_million: 0,
        up: true,
    };

    /// The link that gives `rtt` between any two hosts that both have it.
    pub fn round_trip(rtt: Duration) -> Link {
        Link {
            delay: rtt / 4,
            ..Link::IDEAL
        }
    }

    /// The same link, cut.
    pub fn cut(self) -> Link {
        Link { up: false, ..self }
    }
}

/// One host of a lab.
#[derive(Debug)]
struct Host {
    name: String,
    namespace: String,
    ip: Ipv4Addr,
}

/// Hosts in network namespaces joined by the link emulator; dropping it
/// stops the emulator and removes the namespaces (killing nothing: callers
/// own the processes they start in them).
#[derive(Debug)]
pub struct Lab {
    hosts: Vec<Host>,
    links: Arc<Mutex<Vec<Link>>>,
    nats: Arc<Mutex<Vec<Option<nat::Nat>>>>,
    stop: Arc<AtomicBool>,
    forwarder: Option<JoinHandle<()>>,
}

/// The first octets of every lab address: host `i` is `10.77.0.(i + 1)`.
const SUBNET: [u8; 3] = [10, 77, 0];
/// The first octets of the NAT routers' public addresses: host `i`'s
/// router, if it has one, is `10.77.1.(i + 1)`.
const PUBLIC_SUBNET: [u8; 3] = [10, 77, 1];

impl Lab {
    /// Why a lab cannot be made here, or `None` if it can.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("network namespaces and TUN devices need root".into());
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Some("/dev/net/tun is missing".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(out) if out.status.success() => None,
            _ => Some("`ip` from iproute2 is not installed".into()),
        }
    }

    /// A lab of `names` (at most 254 hosts), every host's link set to
    /// `link`; host `i` gets the address `10.77.0.(i + 1)`.
    pub fn new(names: &[&str], link: Link) -> Result<Lab> {
        Lab::with_nat(names, link, &[])
    }

    /// A lab as [`Lab::new`] makes it, with the hosts in `behind_nat` each
    /// behind its own NAT router, whose public address is
    /// `10.77.1.(i + 1)`.
    pub fn with_nat(names: &[&str], link: Link, behind_nat: &[&str]) -> Result<Lab> {
        if let Some(why) = Lab::unavailable() {
            return Err(LabError::Unavailable(why));
        }
        if names.is_empty() || names.len() > 254 {
            return Err(LabError::Unavailable(format!(
                "a lab holds 1 to 254 hosts, not {}",
                names.len()
            )));
        }
        namespace::remove_stale();
        static LABS: AtomicUsize = AtomicUsize::new(0);
        let lab_id = LABS.fetch_add(1, Ordering::Relaxed);
        let mut lab = Lab {
            hosts: Vec::new(),
            links: Arc::new(Mutex::new(vec![link; names.len()])),
            nats: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            forwarder: None,
        };
        let mut devices: Vec<OwnedFd> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let namespace = namespace::name(lab_id, name);
            let ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], i as u8 + 1);
            namespace::create(&namespace)?;
            // Pushed first, so a failure below still removes it on drop.
            lab.hosts.push(Host {
                name: name.to_string(),
                namespace: namespace.clone(),
                ip,
            });
            devices.push(tun::open_in(&namespace, ip)?);
        }
        for name in behind_nat {
            if !names.contains(name) {
                return Err(LabError::UnknownHost(name.to_string()));
            }
        }
        *lab.nats.lock().unwrap_or_else(|e| e.into_inner()) = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                behind_nat.contains(name).then(|| {
                    let public = Ipv4Addr::new(
                        PUBLIC_SUBNET[0],
                        PUBLIC_SUBNET[1],
                        PUBLIC_SUBNET[2],
                        i as u8 + 1,
                    );
                    nat::Nat::new(lab.hosts[i].ip, public)
                })
            })
            .collect();
        let links = lab.links.clone();
        let nats = lab.nats.clone();
        let stop = lab.stop.clone();
        let addresses: Vec<Ipv4Addr> = lab.hosts.iter().map(|h| h.ip).collect();
        lab.forwarder = Some(
            std::thread::Builder::new()
                .name("netlab-forwarder".into())
                .spawn(move || emulator::run(devices, addresses, nats, links, stop))
                .map_err(|source| LabError::Io {
                    what: "starting the link emulator".into(),
                    source,
                })?,
        );
        Ok(lab)
    }

    fn index(&self, host: &str) -> Result<usize> {
        self.hosts
            .iter()
            .position(|h| h.name == host)
            .ok_or_else(|| LabError::UnknownHost(host.to_string()))
    }

    /// `host`'s address.
    ///
    /// # Panics
    /// If the lab has no such host (a test's own mistake).
    pub fn ip(&self, host: &str) -> Ipv4Addr {
        self.hosts[self.index(host).expect("a host of this lab")].ip
    }

    /// The address the other hosts see `host` at: its router's public
    /// address if it is behind NAT, else its own.
    ///
    /// # Panics
    /// If the lab has no such host.
    pub fn public_ip(&self, host: &str) -> Ipv4Addr {
        let i = self.index(host).expect("a host of this lab");
        let nats = self.nats.lock().unwrap_or_else(|e| e.into_inner());
        nats[i].as_ref().map_or(self.hosts[i].ip, nat::Nat::public)
    }

    /// Packets `host`'s NAT router dropped (unsolicited ones, mostly);
    /// `None` if it is not behind NAT.
    pub fn nat_dropped(&self, host: &str) -> Result<Option<u64>> {
        let i = self.index(host)?;
        let nats = self.nats.lock().unwrap_or_else(|e| e.into_inner());
        Ok(nats[i].as_ref().map(|n| n.dropped))
    }

    /// The name of `host`'s network namespace (for `ip netns exec`).
    ///
    /// # Panics
    /// If the lab has no such host.
    pub fn namespace(&self, host: &str) -> &str {
        &self.hosts[self.index(host).expect("a host of this lab")].namespace
    }

    /// `host`'s link now.
    pub fn link(&self, host: &str) -> Result<Link> {
        let i = self.index(host)?;
        Ok(self.links.lock().unwrap_or_else(|e| e.into_inner())[i])
    }

    /// Sets `host`'s link; packets already in flight keep the delay they
    /// were given, and a cut link drops them on arrival too.
    pub fn set_link(&self, host: &str, link: Link) -> Result<()> {
        let i = self.index(host)?;
        self.links.lock().unwrap_or_else(|e| e.into_inner())[i] = link;
        Ok(())
    }

    /// A command that runs `program` on `host` (through `ip netns exec`).
    ///
    /// # Panics
    /// If the lab has no such host.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.namespace(host)]).arg(program);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.forwarder.take() {
            let _ = t.join();
        }
        for h in &self.hosts {
            namespace::delete(&h.namespace);
        }
    }
}
