//! Decode speed through three 10-block hosters on three hosts, over links
//! of 10, 50 and 100 ms round trip (the netlab link emulator), with the
//! client relaying every hidden state and with servers pushing to each
//! other, in the same run. Each figure is set beside its latency bound:
//! `1 / (3 RTT + compute)` for relay, `1 / (2 RTT + compute)` for push,
//! where `compute` is a step's time over ideal links in the same run,
//! measured two ways: steps back to back (the workers still spinning from
//! the last one), and steps each after an idle pause (the workers asleep,
//! as on every real link, where each step follows a network wait).
//!
//! Needs root (namespaces, TUN). `cargo bench -p hypertensor-cli --bench
//! links [-- --tokens N] [--rtt MS]...` (default: 10, 50 and 100 ms); see
//! docs/benchmarks.md.

use std::time::{Duration, Instant};

use hypertensor_model::LanguageModel;
use hypertensor_netlab::{Lab, Link, in_namespace};
use hypertensor_node::{NodeBuilder, NodeOptions};
use hypertensor_primitives::Keypair;

mod common;
use common::hoster;

const HOSTERS: [(&str, &str); 3] = [("s1", "0:10"), ("s2", "10:20"), ("s3", "20:30")];

/// How long the process sleeps before each step of a "compute after a
/// pause" run: far longer than the compute threads spin before sleeping.
const IDLE_PAUSE: Duration = Duration::from_millis(20);

/// Per-token decode times of `tokens` greedy steps after a short prompt,
/// for a client on `host` that relays or lets servers push, each step
/// after `pause` (untimed).
fn decode_steps(
    lab: &Lab,
    boot: &str,
    relay: bool,
    tokens: usize,
    pause: Duration,
) -> Vec<Duration> {
    let boot = boot.parse().expect("a multiaddr");
    let listen = format!("/ip4/{}/tcp/0", lab.ip("client"))
        .parse()
        .expect("a multiaddr");
    let model = hypertensor_fetch::default_model_path(true).expect("the default model");
    in_namespace(lab.namespace("client"), move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let mut options =
            NodeOptions::without_chain(Keypair::from_secret(rand::random()), 1, model);
        options.bootstrap = vec![boot];
        options.listen = vec![listen];
        options.swarm_client = true;
        options.relay = relay;
        let node = runtime
            .block_on(NodeBuilder::new(options).start())
            .expect("the client node starts");
        let client = node.swarm.clone().expect("a swarm client");
        let prompt = client
            .tokenizer()
            .encode_with_bos("The history of the printing press", false)
            .expect("encodes");
        // Announcements may still be on their way: retry until a route.
        let mut session = client.session_for(prompt.len() + tokens + 1);
        let mut logits = None;
        for _ in 0..60 {
            session.reset();
            match session.forward(&prompt) {
                Ok(l) => {
                    logits = Some(l);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        let mut logits = logits.expect("the swarm serves the prompt");
        let mut times = Vec::with_capacity(tokens);
        for _ in 0..tokens {
            let next = argmax(&logits);
            std::thread::sleep(pause);
            let start = Instant::now();
            logits = session.forward(&[next]).expect("a decode step");
            times.push(start.elapsed());
        }
        drop(session);
        drop(node);
        times
    })
    .expect("the client's namespace")
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    let mut tokens = 48;
    let mut rtts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match a.as_str() {
            "--tokens" => tokens = value("--tokens") as usize,
            "--rtt" => rtts.push(value("--rtt")),
            _ => {}
        }
    }
    if rtts.is_empty() {
        rtts = vec![10, 50, 100];
    }
    if let Some(why) = Lab::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let lab = Lab::new(&["client", "s1", "s2", "s3"], Link::IDEAL).expect("the lab starts");
    let (first, boot) = hoster(&lab, HOSTERS[0].0, HOSTERS[0].1, None);
    let mut procs = vec![first];
    for (host, span) in &HOSTERS[1..] {
        procs.push(hoster(&lab, host, span, Some(&boot)).0);
    }

    println!(
        "decode through three 10-block hosters on three hosts, {tokens} tokens per run (median step)"
    );
    println!();
    println!(
        "| RTT | mode | step (ms) | tokens/s | bound, compute back to back | of it | \
         bound, compute after a pause | of it |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    // Compute: the same steps over ideal links, per mode, back to back
    // (hot) and each after an idle pause (cold).
    let mut hot = [Duration::ZERO; 2];
    let mut cold = [Duration::ZERO; 2];
    for (m, relay) in [true, false].into_iter().enumerate() {
        hot[m] = median(decode_steps(&lab, &boot, relay, tokens, Duration::ZERO));
        cold[m] = median(decode_steps(&lab, &boot, relay, tokens, IDLE_PAUSE));
        let name = if relay { "relay" } else { "push" };
        println!(
            "| 0 ms | {name} | {:.1} back to back, {:.1} after a pause | (compute) | | | | |",
            hot[m].as_secs_f64() * 1e3,
            cold[m].as_secs_f64() * 1e3,
        );
    }
    let mut at_50 = [0.0f64; 2];
    for &rtt_ms in &rtts {
        let rtt = Duration::from_millis(rtt_ms);
        for host in ["client", "s1", "s2", "s3"] {
            lab.set_link(host, Link::round_trip(rtt))
                .expect("a lab host");
        }
        for (m, relay) in [true, false].into_iter().enumerate() {
            let step = median(decode_steps(&lab, &boot, relay, tokens, Duration::ZERO));
            let trips = if relay { 3.0 } else { 2.0 };
            let network = trips * rtt.as_secs_f64();
            let bound_hot = 1.0 / (network + hot[m].as_secs_f64());
            let bound_cold = 1.0 / (network + cold[m].as_secs_f64());
            let rate = 1.0 / step.as_secs_f64();
            if rtt_ms == 50 {
                at_50[m] = rate;
            }
            let name = if relay { "relay" } else { "push" };
            println!(
                "| {rtt_ms} ms | {name} | {:.1} | {rate:.2} | {bound_hot:.2} | {:.2} | \
                 {bound_cold:.2} | {:.2} |",
                step.as_secs_f64() * 1e3,
                rate / bound_hot,
                rate / bound_cold
            );
        }
    }
    println!();
    println!(
        "push / relay at 50 ms: {:.2} (goal >= 1.3)",
        at_50[1] / at_50[0]
    );
    drop(procs);
}
