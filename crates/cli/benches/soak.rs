//! A chaos soak of the swarm across hosts: six hosters (two per span of
//! ten blocks) and a gateway, each in its own network namespace behind
//! 20 ms links with jitter, under continuous API load, while a driver kills
//! a random hoster every 20 to 40 seconds (one whose span keeps a live
//! replica) and restarts it a few seconds later. It reports requests sent
//! and failed (goal: none failed, through failover), restarts, and each
//! process's memory at the start and the end.
//!
//! Not in the default test run: `tools/soak.sh [--minutes N]` (default 20).
//! Needs root (namespaces, TUN). The chain and the subnet's validators are
//! not part of it yet: epochs settled and the issuance invariant are not
//! reported.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hypertensor_netlab::{Lab, Link, in_namespace};

mod common;
use common::{Proc, node};

/// (host, span) of every hoster: two replicas of each third of the model.
const HOSTERS: [(&str, &str); 6] = [
    ("h1", "0:10"),
    ("h2", "0:10"),
    ("h3", "10:20"),
    ("h4", "10:20"),
    ("h5", "20:30"),
    ("h6", "20:30"),
];
/// Concurrent API clients.
const CLIENTS: usize = 2;

fn hoster(lab: &Lab, host: &str, span: &str, boot: &str) -> Proc {
    common::hoster(lab, host, span, Some(boot)).0
}

/// Resident memory of a process, in MiB (0 if it is gone).
fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// One completion through the gateway's API from the gateway's own host;
/// the HTTP status, or 0 when the request could not be made.
fn complete(lab_ns: &str, api: SocketAddr, prompt: &str) -> u16 {
    let body = format!(
        r#"{{"model": "smollm2", "prompt": "{prompt}", "max_tokens": 16, "temperature": 0}}"#
    );
    let stream = in_namespace(lab_ns, move || {
        TcpStream::connect_timeout(&api, Duration::from_secs(5))
    });
    let Ok(Ok(mut stream)) = stream else { return 0 };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let request = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A small deterministic generator for the driver's choices.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn main() {
    let mut minutes = 20u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--minutes" {
            minutes = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--minutes N");
        }
    }
    if let Some(why) = Lab::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut hosts = vec!["gateway"];
    hosts.extend(HOSTERS.iter().map(|(h, _)| *h));
    let link = Link {
        jitter: Duration::from_millis(2),
        ..Link::round_trip(Duration::from_millis(20))
    };
    let lab = Lab::new(&hosts, link).expect("the lab starts");
    let api = SocketAddr::from((lab.ip("gateway"), 8000));
    let (gateway, boot) = node(
        &lab,
        "gateway",
        &["--role", "client", "--api", &api.to_string()],
        "OpenAI-compatible API",
    );
    let mut live: HashMap<&str, Proc> = HashMap::new();
    for (host, span) in HOSTERS {
        live.insert(host, hoster(&lab, host, span, &boot));
    }
    let memory = |live: &HashMap<&str, Proc>| -> String {
        let mut parts = vec![format!("gateway {} MiB", rss_mib(gateway.0.id()))];
        for (host, _) in HOSTERS {
            if let Some(p) = live.get(host) {
                parts.push(format!("{host} {} MiB", rss_mib(p.0.id())));
            }
        }
        parts.join(", ")
    };
    println!("soak: {minutes} min, {CLIENTS} clients, 6 hosters (2 per span), links 20 ms +- 2 ms");
    println!("start: {} processes; {}", live.len() + 1, memory(&live));

    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ns = lab.namespace("gateway").to_string();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (sent, failed, stop, ns) = (sent.clone(), failed.clone(), stop.clone(), ns.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let prompt = format!("Client {c}, request {i}: the weather today is");
                    let status = complete(&ns, api, &prompt);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("request {c}/{i} failed: status {status}");
                    }
                    i += 1;
                }
            })
        })
        .collect();

    let mut dice = Dice(0x5eed_cafe_f00d_1234);
    let mut restarts = 0u32;
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    while Instant::now() < end {
        let pause = Duration::from_secs(20 + dice.below(21));
        std::thread::sleep(pause.min(end.saturating_duration_since(Instant::now())));
        if Instant::now() >= end {
            break;
        }
        // A hoster whose span keeps its other replica.
        let (host, span) = HOSTERS[dice.below(HOSTERS.len() as u64) as usize];
        let replicas = HOSTERS
            .iter()
            .filter(|(h, s)| *s == span && live.contains_key(h))
            .count();
        if replicas < 2 {
            continue;
        }
        drop(live.remove(host));
        println!(
            "[{:>4} s] killed {host} ({span}); sent {}, failed {}",
            minutes * 60 - end.saturating_duration_since(Instant::now()).as_secs(),
            sent.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_secs(3 + dice.below(5)));
        live.insert(host, hoster(&lab, host, span, &boot));
        restarts += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    println!("end: {} processes; {}", live.len() + 1, memory(&live));
    println!(
        "requests sent {}, failed {} (goal 0); hosters killed and restarted {restarts}",
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    drop(live);
    drop(gateway);
}
