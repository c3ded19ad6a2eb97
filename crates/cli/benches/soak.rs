//! A chaos soak of the whole staked network across hosts
//! (`hypertensor_labnet`): four chain validators, three subnet validators,
//! six hosters (two per span of ten blocks) and a gateway, each a process
//! on its own host behind 20 ms links with jitter, under continuous API
//! load, while a driver kills a random process every 20 to 40 seconds and
//! restarts it a few seconds later: a hoster whose span keeps a live
//! replica, a subnet validator, or (one at a time) a chain validator.
//!
//! It reports requests sent and failed (goal: none failed, through
//! failover), epochs settled in consensus out of epochs elapsed (with
//! what was down in the others), the issuance invariant checked at every
//! epoch, and the processes and their memory at the start and the end.
//!
//! Not in the default test run: `tools/soak.sh [--minutes N]` (default
//! 20). Needs root (namespaces, TUN).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hypertensor_labnet::{Network, Options, chain_host, post_from};
use hypertensor_netlab::{Lab, Link};
use hypertensor_node::devnet::Role;
use hypertensor_runtime::SettlementOutcome;

/// Concurrent API clients.
const CLIENTS: usize = 2;

/// One completion through the gateway's API from the gateway's own host;
/// the HTTP status, or 0 when the request could not be made.
fn complete(lab_ns: &str, api: SocketAddr, prompt: &str) -> u16 {
    let body = format!(
        r#"{{"model": "smollm2", "prompt": "{prompt}", "max_tokens": 16, "temperature": 0}}"#
    );
    post_from(lab_ns, api, "/v1/completions", &body).0
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

/// What the driver saw of the epochs.
#[derive(Default)]
struct Epochs {
    /// Next epoch to read once settled.
    next: u64,
    elapsed: u64,
    in_consensus: u64,
    /// Of those, epochs in consensus with every score zero.
    held: u64,
    /// Epochs settled otherwise: (epoch, outcome, what was down).
    others: Vec<(u64, String, String)>,
    /// Issuance checks, one at each epoch boundary seen: (held, made).
    invariant: (u64, u64),
}

impl Epochs {
    /// Reads every epoch settled since the last call.
    fn read(&mut self, net: &Network, down: &str) {
        let Ok(now) = net.epoch() else { return };
        if self.next >= now {
            return;
        }
        while self.next < now {
            let epoch = self.next;
            let Ok(report) = net.report(epoch) else {
                return;
            };
            self.elapsed += 1;
            match &report.outcome {
                Some(SettlementOutcome::InConsensus { .. }) => self.in_consensus += 1,
                Some(SettlementOutcome::HeldRewards { .. }) => {
                    // In consensus, every score zero (the first epoch,
                    // before any hoster has a score): nothing paid.
                    self.in_consensus += 1;
                    self.held += 1;
                }
                other => {
                    let outcome = other
                        .as_ref()
                        .map_or("not settled".to_string(), |o| format!("{o:?}"));
                    println!("epoch {epoch}: {outcome} ({down} down)");
                    self.others.push((epoch, outcome, down.to_string()));
                }
            }
            self.next += 1;
        }
        if let Ok(t) = net.totals() {
            self.invariant.1 += 1;
            if t.accounted() == Some(t.issuance) {
                self.invariant.0 += 1;
            } else {
                println!("issuance not conserved: {t:?}");
            }
        }
    }
}

fn memory(net: &Network) -> String {
    net.memory()
        .iter()
        .map(|(host, mib)| format!("{host} {mib}"))
        .collect::<Vec<_>>()
        .join(", ")
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
    let model = hypertensor_fetch::default_model_path(true).expect("the default model");
    let dir = std::env::temp_dir().join(format!("hypertensor-soak-{}", std::process::id()));
    let mut options = Options::new(env!("CARGO_BIN_EXE_hypertensor").into(), model, dir.clone());
    options.hosters = 6;
    options.block_time_ms = 1000;
    options.link = Link {
        jitter: Duration::from_millis(2),
        ..Link::round_trip(Duration::from_millis(20))
    };
    let started = Instant::now();
    let mut net = Network::start(options.clone()).expect("the network starts");
    println!(
        "soak: {minutes} min, {CLIENTS} clients; {} chain validators, {} subnet validators, \
         {} hosters (2 per span); links 20 ms +- 2 ms; epochs of {} blocks of {} ms; \
         set up in {:.0?}",
        options.chain_validators,
        options.validators,
        options.hosters,
        options.epoch_length,
        options.block_time_ms,
        started.elapsed()
    );
    println!(
        "start: {} processes; MiB: {}",
        net.memory().len(),
        memory(&net)
    );

    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ns = net.lab().namespace("gateway").to_string();
    let api = net.api_addr();
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

    // Who can be killed: hosters (if their span keeps a live replica),
    // subnet validators, chain validators (one at a time, by construction:
    // one victim is down at a time).
    let mut victims: Vec<(String, Option<std::ops::Range<usize>>)> = net
        .members()
        .iter()
        .map(|m| match &m.role {
            Role::Hoster(span) => (m.name.clone(), Some(span.clone())),
            Role::Validator => (m.name.clone(), None),
        })
        .collect();
    victims.extend((0..options.chain_validators).map(|i| (chain_host(i), None)));

    // The subnet was activated during this epoch; consensus starts with
    // the next.
    let mut epochs = Epochs {
        next: net.epoch().expect("the chain answers") + 1,
        ..Epochs::default()
    };
    let mut dice = Dice(0x5eed_cafe_f00d_1234);
    let mut restarts: BTreeMap<&str, u32> = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let clock = Instant::now();
    let watch_until = |epochs: &mut Epochs, net: &Network, until: Instant, down: &str| {
        while Instant::now() < until {
            epochs.read(net, down);
            std::thread::sleep(
                Duration::from_secs(1).min(until.saturating_duration_since(Instant::now())),
            );
        }
    };
    while Instant::now() < end {
        let pause = Duration::from_secs(20 + dice.below(21));
        watch_until(
            &mut epochs,
            &net,
            (Instant::now() + pause).min(end),
            "nothing",
        );
        if Instant::now() >= end {
            break;
        }
        let (victim, span) = victims[dice.below(victims.len() as u64) as usize].clone();
        if let Some(span) = &span {
            let replicas = victims
                .iter()
                .filter(|(h, s)| s.as_ref() == Some(span) && *h != victim)
                .filter(|(h, _)| net.is_running(h))
                .count();
            if replicas == 0 {
                continue;
            }
        }
        net.kill(&victim).expect("the victim runs");
        println!(
            "[{:>4} s] killed {victim}; sent {}, failed {}",
            clock.elapsed().as_secs(),
            sent.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
        let down = Instant::now() + Duration::from_secs(3 + dice.below(6));
        watch_until(&mut epochs, &net, down, &victim);
        net.restart(&victim).expect("the victim restarts");
        let kind = if victim.starts_with("chain-") {
            "chain validators"
        } else if victim.starts_with("validator-") {
            "subnet validators"
        } else {
            "hosters"
        };
        *restarts.entry(kind).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    epochs.read(&net, "nothing");
    println!(
        "end: {} processes; MiB: {}",
        net.memory().len(),
        memory(&net)
    );
    println!(
        "requests sent {}, failed {} (goal 0)",
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "epochs settled in consensus {} of {} elapsed ({} of them with every score zero); \
         others: {:?}",
        epochs.in_consensus, epochs.elapsed, epochs.held, epochs.others
    );
    println!(
        "issuance conserved at {} of {} epoch checks",
        epochs.invariant.0, epochs.invariant.1
    );
    println!("killed and restarted: {restarts:?}");
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
