//! What the consensus loop costs each node per epoch, for 4, 8 and 16
//! hosters: process CPU time against a baseline of the same network without
//! consensus loops, and the DHT bytes and records each loop wrote and read.
//!
//! Each devnet (in-process chain, 2 validators, hosters of 10 of the
//! model's 30 blocks dealt round-robin over 3 segments, gateway; 20-block
//! epochs of 250 ms) runs until its subnet is active and the first epoch
//! with consensus data has passed (a warm-up: its validators have no
//! previous epoch to reveal), then is measured over `E` full epochs, from
//! the first head of an epoch to the first head after the last one. The
//! chain, the swarms and the block servers run in this process too, which
//! is why the same network is measured again with `consensus: false`.
//! Every measured epoch of a consensus run must settle `InConsensus`.
//!
//! `E` is 3, or `HYPERTENSOR_BENCH_EPOCHS`, or the first numeric argument;
//! `HYPERTENSOR_BENCH_HOSTERS` (e.g. `4,8`) picks other hoster counts.
//! Prints a table and writes JSON to `HYPERTENSOR_BENCH_JSON`, default
//! `<target>/bench/consensus.json`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hypertensor_node::LoopMetrics;
use hypertensor_node::devnet::{Devnet, DevnetConfig, Role};
use hypertensor_runtime::SettlementOutcome;

const MODEL: &str = "smollm2";
const VALIDATORS: usize = 2;
const BLOCKS_PER_HOSTER: usize = 10;
const EPOCH_LENGTH: u64 = 20;
const BLOCK_TIME_MS: u64 = 250;
/// Announced instead of measured, so start-up does not load the CPU.
const THROUGHPUT: f64 = 50.0;
/// `/proc/<pid>/stat` counts in USER_HZ, 100 on every Linux ABI.
const USER_HZ: u64 = 100;
/// Longest a devnet may take to reach its first consensus epoch.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// CPU time (user + system) of this process so far.
fn process_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("cannot read /proc/self/stat")?;
    // The command name (field 2) may hold spaces: count fields after `)`.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no `)` in /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the state.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("/proc/self/stat is too short")?
            .parse::<u64>()
            .context("a non-numeric CPU time")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / USER_HZ))
}

/// One node's loop counters, or their difference over a window.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    bytes_written: u64,
    bytes_read: u64,
    writes: u64,
    reads: u64,
    compute: Duration,
}

impl Counters {
    fn of(m: &LoopMetrics) -> Self {
        Counters {
            bytes_written: m.bytes_written(),
            bytes_read: m.bytes_read(),
            writes: m.writes(),
            reads: m.reads(),
            compute: m.compute_time(),
        }
    }

    fn minus(self, before: Counters) -> Self {
        Counters {
            bytes_written: self.bytes_written - before.bytes_written,
            bytes_read: self.bytes_read - before.bytes_read,
            writes: self.writes - before.writes,
            reads: self.reads - before.reads,
            compute: self.compute.saturating_sub(before.compute),
        }
    }

    fn plus(self, other: Counters) -> Self {
        Counters {
            bytes_written: self.bytes_written + other.bytes_written,
            bytes_read: self.bytes_read + other.bytes_read,
            writes: self.writes + other.writes,
            reads: self.reads + other.reads,
            compute: self.compute + other.compute,
        }
    }
}

/// A point in time of a run: process CPU and every node's counters.
struct Sample {
    cpu: Duration,
    wall: Instant,
    nodes: Vec<Counters>,
}

fn sample(devnet: &Devnet) -> Result<Sample> {
    Ok(Sample {
        cpu: process_cpu()?,
        wall: Instant::now(),
        nodes: devnet
            .nodes
            .iter()
            .map(|(_, n)| n.metrics.as_deref().map(Counters::of).unwrap_or_default())
            .collect(),
    })
}

/// What one devnet run measured.
struct Run {
    /// Nodes running (or, in a baseline, not running) a consensus loop.
    nodes: usize,
    /// The measured epochs.
    epochs: Vec<u64>,
    cpu: Duration,
    wall: Duration,
    /// Sums over hosters and over validator-only nodes.
    hosters: Counters,
    validators: Counters,
    /// Each measured epoch's settlement, as text.
    outcomes: Vec<String>,
    in_consensus: usize,
}

fn outcome_name(outcome: &Option<SettlementOutcome>) -> String {
    match outcome {
        None => "not settled".into(),
        Some(SettlementOutcome::NoProposal) => "NoProposal".into(),
        Some(SettlementOutcome::BelowMinAttestation { .. }) => "BelowMinAttestation".into(),
        Some(SettlementOutcome::HeldRewards { .. }) => "HeldRewards".into(),
        Some(SettlementOutcome::InConsensus { .. }) => "InConsensus".into(),
    }
}

/// Waits for the first head at or above `height`.
async fn head_at_least(
    heads: &mut hypertensor_chain_client::Subscription<hypertensor_chain_client::HeaderInfo>,
    height: u64,
) -> Result<u64> {
    loop {
        let head = heads.next().await.context("the chain closed")??;
        if head.header.height >= height {
            return Ok(head.header.height);
        }
    }
}

async fn run(model: &Path, hosters: usize, consensus: bool, epochs: u64) -> Result<Run> {
    let dir = std::env::temp_dir().join(format!(
        "hypertensor-bench-consensus-{}-{hosters}-{}",
        std::process::id(),
        if consensus { "on" } else { "off" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = DevnetConfig::new(dir.clone(), model.to_path_buf(), MODEL);
    config.hosters = Some(hosters);
    config.validators = VALIDATORS;
    config.blocks_per_hoster = BLOCKS_PER_HOSTER;
    config.epoch_length = EPOCH_LENGTH;
    config.block_time_ms = BLOCK_TIME_MS;
    config.api_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.throughput = Some(THROUGHPUT);
    config.consensus = consensus;
    let mut devnet = Devnet::start(config).await?;
    let outcome = measure(&mut devnet, epochs).await;
    devnet.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn measure(devnet: &mut Devnet, epochs: u64) -> Result<Run> {
    tokio::time::timeout(START_TIMEOUT, devnet.wait_active())
        .await
        .context("the subnet did not activate in time")??;
    let mut heads = devnet.chain.subscribe_new_heads().await?;
    // The first epoch with consensus data (an elected validator).
    let first = tokio::time::timeout(START_TIMEOUT, async {
        loop {
            let height = head_at_least(&mut heads, 0).await?;
            let epoch = height / EPOCH_LENGTH;
            if devnet
                .chain
                .consensus_data(devnet.subnet, Some(epoch))
                .await?
                .is_some()
            {
                return anyhow::Ok(epoch);
            }
        }
    })
    .await
    .context("no consensus epoch began in time")??;
    let start_epoch = first + 1;
    head_at_least(&mut heads, start_epoch * EPOCH_LENGTH).await?;
    let before = sample(devnet)?;
    let end_height = (start_epoch + epochs) * EPOCH_LENGTH;
    let reached = head_at_least(&mut heads, end_height).await?;
    let after = sample(devnet)?;
    if reached != end_height {
        eprintln!("  (the end sample was taken at height {reached}, not {end_height})");
    }

    let (mut hosters, mut validators) = (Counters::default(), Counters::default());
    for (((member, _), b), a) in devnet.nodes.iter().zip(&before.nodes).zip(&after.nodes) {
        let delta = a.minus(*b);
        match member.role {
            Role::Hoster(_) => hosters = hosters.plus(delta),
            Role::Validator => validators = validators.plus(delta),
        }
    }
    let measured: Vec<u64> = (start_epoch..start_epoch + epochs).collect();
    let mut outcomes = Vec::new();
    let mut in_consensus = 0;
    for &e in &measured {
        let report = devnet.epoch_report(e).await?;
        if matches!(report.outcome, Some(SettlementOutcome::InConsensus { .. })) {
            in_consensus += 1;
        }
        outcomes.push(format!(
            "epoch {e}: {} ({}/{} attested)",
            outcome_name(&report.outcome),
            report.attesters.len(),
            report.snapshot
        ));
    }
    Ok(Run {
        nodes: devnet.nodes.len(),
        epochs: measured,
        cpu: after.cpu.saturating_sub(before.cpu),
        wall: after.wall - before.wall,
        hosters,
        validators,
        outcomes,
        in_consensus,
    })
}

fn json_path() -> PathBuf {
    if let Some(path) = std::env::var_os("HYPERTENSOR_BENCH_JSON") {
        return path.into();
    }
    // The executable lives in <target>/<profile>/deps/.
    let target = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| "target".into());
    target.join("bench").join("consensus.json")
}

fn epochs_wanted() -> Result<u64> {
    let arg = std::env::args()
        .skip(1)
        .find(|a| a.parse::<u64>().is_ok())
        .or_else(|| std::env::var("HYPERTENSOR_BENCH_EPOCHS").ok());
    let epochs = match arg {
        Some(a) => a
            .parse::<u64>()
            .with_context(|| format!("epochs `{a}` is not a number"))?,
        None => 3,
    };
    if epochs == 0 {
        bail!("measure at least one epoch");
    }
    Ok(epochs)
}

fn hosters_wanted() -> Result<Vec<usize>> {
    match std::env::var("HYPERTENSOR_BENCH_HOSTERS") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .with_context(|| format!("hosters `{s}` is not a number"))
            })
            .collect(),
        Err(_) => Ok(vec![4, 8, 16]),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<()> {
    let epochs = epochs_wanted()?;
    let counts = hosters_wanted()?;
    let model: PathBuf = match std::env::var_os("HYPERTENSOR_MODEL") {
        Some(path) => path.into(),
        None => hypertensor_fetch::default_model_path(true).context("default model")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?;

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for &n in &counts {
        println!("{n} hosters + {VALIDATORS} validators, {epochs} epochs: consensus run");
        let runs = runtime
            .block_on(run(&model, n, true, epochs))
            .and_then(|on| {
                for line in &on.outcomes {
                    println!("  {line}");
                }
                println!("{n} hosters + {VALIDATORS} validators, {epochs} epochs: baseline run");
                let off = runtime.block_on(run(&model, n, false, epochs))?;
                for line in &off.outcomes {
                    println!("  {line}");
                }
                Ok((on, off))
            });
        let (on, off) = match runs {
            Ok(runs) => runs,
            Err(e) => {
                eprintln!("  {n} hosters failed: {e:#}");
                failures.push(format!("{n} hosters: {e:#}"));
                continue;
            }
        };
        let node_epochs = (on.nodes as u64 * epochs) as f64;
        let hoster_epochs = (n as u64 * epochs) as f64;
        let validator_epochs = (VALIDATORS as u64 * epochs) as f64;
        let all = on.hosters.plus(on.validators);
        let row = serde_json::json!({
            "hosters": n,
            "validators": VALIDATORS,
            "nodes": on.nodes,
            "epochs": on.epochs,
            "in_consensus": on.in_consensus,
            "outcomes": on.outcomes,
            "baseline_outcomes": off.outcomes,
            "wall_s": on.wall.as_secs_f64(),
            "baseline_wall_s": off.wall.as_secs_f64(),
            "cpu_ms_total": ms(on.cpu),
            "baseline_cpu_ms_total": ms(off.cpu),
            "per_node_epoch": {
                "cpu_ms": ms(on.cpu) / node_epochs,
                "baseline_cpu_ms": ms(off.cpu) / node_epochs,
                "consensus_cpu_ms": (ms(on.cpu) - ms(off.cpu)) / node_epochs,
                "bytes_written": all.bytes_written as f64 / node_epochs,
                "bytes_read": all.bytes_read as f64 / node_epochs,
                "writes": all.writes as f64 / node_epochs,
                "reads": all.reads as f64 / node_epochs,
                "compute_ms": ms(all.compute) / node_epochs,
            },
            "per_hoster_epoch": {
                "bytes_written": on.hosters.bytes_written as f64 / hoster_epochs,
                "bytes_read": on.hosters.bytes_read as f64 / hoster_epochs,
                "writes": on.hosters.writes as f64 / hoster_epochs,
                "reads": on.hosters.reads as f64 / hoster_epochs,
                "compute_ms": ms(on.hosters.compute) / hoster_epochs,
            },
            "per_validator_epoch": {
                "bytes_written": on.validators.bytes_written as f64 / validator_epochs,
                "bytes_read": on.validators.bytes_read as f64 / validator_epochs,
                "writes": on.validators.writes as f64 / validator_epochs,
                "reads": on.validators.reads as f64 / validator_epochs,
                "compute_ms": ms(on.validators.compute) / validator_epochs,
            },
        });
        if on.in_consensus as u64 != epochs {
            eprintln!(
                "WARNING: only {}/{epochs} measured epochs settled InConsensus with {n} hosters",
                on.in_consensus
            );
        }
        rows.push(row);
    }

    println!();
    println!("Per node and epoch (nodes = hosters + {VALIDATORS} validators; {epochs} epochs):");
    println!();
    println!(
        "| hosters | in consensus | CPU ms | baseline CPU ms | consensus CPU ms | DHT bytes written | DHT bytes read | writes | reads | loop compute ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let p = &row["per_node_epoch"];
        println!(
            "| {} | {}/{} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |",
            row["hosters"],
            row["in_consensus"],
            epochs,
            p["cpu_ms"].as_f64().unwrap_or(f64::NAN),
            p["baseline_cpu_ms"].as_f64().unwrap_or(f64::NAN),
            p["consensus_cpu_ms"].as_f64().unwrap_or(f64::NAN),
            p["bytes_written"].as_f64().unwrap_or(f64::NAN),
            p["bytes_read"].as_f64().unwrap_or(f64::NAN),
            p["writes"].as_f64().unwrap_or(f64::NAN),
            p["reads"].as_f64().unwrap_or(f64::NAN),
            p["compute_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!();
    println!("By role, per node and epoch:");
    println!();
    println!(
        "| hosters | role | DHT bytes written | DHT bytes read | writes | reads | loop compute ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        for (role, key) in [
            ("hoster", "per_hoster_epoch"),
            ("validator", "per_validator_epoch"),
        ] {
            let p = &row[key];
            println!(
                "| {} | {role} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |",
                row["hosters"],
                p["bytes_written"].as_f64().unwrap_or(f64::NAN),
                p["bytes_read"].as_f64().unwrap_or(f64::NAN),
                p["writes"].as_f64().unwrap_or(f64::NAN),
                p["reads"].as_f64().unwrap_or(f64::NAN),
                p["compute_ms"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }

    let json = serde_json::json!({
        "model": model.file_name().and_then(|f| f.to_str()),
        "validators": VALIDATORS,
        "blocks_per_hoster": BLOCKS_PER_HOSTER,
        "epoch_length": EPOCH_LENGTH,
        "block_time_ms": BLOCK_TIME_MS,
        "epochs": epochs,
        "results": rows,
        "failures": failures,
    });
    let path = json_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match serde_json::to_string_pretty(&json).map(|s| std::fs::write(&path, s)) {
        Ok(Ok(())) => println!("\nwrote {}", path.display()),
        _ => eprintln!("could not write {}", path.display()),
    }
    let off_consensus = rows
        .iter()
        .filter(|r| r["in_consensus"].as_u64() != Some(epochs))
        .count();
    if !failures.is_empty() || off_consensus > 0 {
        bail!(
            "{} hoster count(s) failed to run, {off_consensus} had measured epochs not in consensus",
            failures.len()
        );
    }
    Ok(())
}
