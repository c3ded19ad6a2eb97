//! Chain runtime benchmarks: `cargo bench -p hypertensor-runtime`.
//!
//! 1. Settlement of one epoch with 64 subnets x 256 nodes (goal < 50 ms):
//!    the initialization of the first block of an epoch (settlement, EDA,
//!    rewards, penalties, promotions, election, subsidy), measured as
//!    `BlockBuilder::new`, which also clones the state (the clone alone is
//!    reported beside it).
//! 2. Extrinsics applied per second, with and without signature checks, and
//!    full block import (`apply_block`, signatures and state root included).
//!
//! Prints a table and writes JSON to `<target>/bench-runtime.json`.

use std::time::{Duration, Instant};

use hypertensor_primitives::{AccountId, Keypair, PeerId, TENSOR};
use hypertensor_runtime::{
    BlockBuilder, Call, Extrinsic, GenesisAccount, GenesisConfig, GenesisNode, GenesisSubnet,
    NodeClass, Params, SignatureCheck, State, apply_block,
};

const SUBNETS: usize = 64;
const NODES: usize = 256;
const VALIDATORS: usize = 8;
const REPEATS: usize = 15;

fn validator_key(subnet: usize, node: usize) -> Keypair {
    Keypair::dev(&format!("bench-hot-{subnet}-{node}"))
}

/// A distinct, never-signing account id for node `n` of subnet `s`.
fn filler_account(s: usize, n: usize, tag: u8) -> AccountId {
    let mut bytes = [0u8; 32];
    bytes[0] = tag;
    bytes[1..5].copy_from_slice(&(s as u32).to_le_bytes());
    bytes[5..9].copy_from_slice(&(n as u32).to_le_bytes());
    AccountId(bytes)
}

fn big_genesis() -> GenesisConfig {
    let params = Params {
        epoch_length: 10,
        max_block_extrinsics: 4096,
        ..Params::default()
    };
    let mut accounts = Vec::new();
    let mut subnets = Vec::new();
    for s in 0..SUBNETS {
        let mut nodes = Vec::new();
        for n in 0..NODES {
            let hotkey = if n < VALIDATORS {
                let k = validator_key(s, n).account_id();
                accounts.push(GenesisAccount {
                    account: k,
                    balance: TENSOR,
                });
                k
            } else {
                filler_account(s, n, 1)
            };
            nodes.push(GenesisNode {
                owner: filler_account(s, n, 2),
                hotkey,
                peer_id: PeerId::from_ed25519(&filler_account(s, n, 3)),
                client_peer_id: None,
                // Stakes differ per subnet so the EDA caps some subnets.
                stake: (100 + ((s * 37 + n * 11) % 900) as u128 + if s == 0 { 900 } else { 0 })
                    * TENSOR,
                class: if n < VALIDATORS {
                    NodeClass::Validator
                } else {
                    NodeClass::Included
                },
            });
        }
        subnets.push(GenesisSubnet {
            name: format!("subnet-{s}"),
            model: "bench/model".into(),
            owner: filler_account(s, 0, 4),
            min_stake: 100 * TENSOR,
            max_stake: 10_000 * TENSOR,
            active: true,
            nodes,
        });
    }
    GenesisConfig {
        params,
        timestamp_ms: 0,
        accounts,
        subnets,
        validators: Vec::new(),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

struct Row {
    name: &'static str,
    value: f64,
    unit: &'static str,
    goal: String,
}

/// The state at the last block of epoch 0, with every subnet's proposal
/// and all attestations in.
fn settlement_parent() -> State {
    let genesis = big_genesis().build().expect("bench genesis builds");
    let mut state = genesis.state;
    let author = filler_account(0, 0, 9);
    let mut builder = BlockBuilder::new(&state, author, 1000).unwrap();
    for s in 0..SUBNETS {
        let subnet = s as u32 + 1;
        let record = state.consensus_data(subnet, 0).unwrap().clone();
        let scores = (1..=NODES as u32)
            .map(|n| (n, u128::from(n % 17 + 1) * TENSOR))
            .collect();
        let proposer = validator_key(s, record.validator as usize - 1);
        let call = Call::ProposeAttestation {
            subnet,
            epoch: 0,
            scores,
        };
        builder
            .push(Extrinsic::sign(&proposer, 0, call, &state.genesis_hash()))
            .unwrap();
        for node in record.snapshot.iter().filter(|n| **n != record.validator) {
            let key = validator_key(s, *node as usize - 1);
            let call = Call::Attest { subnet, epoch: 0 };
            builder
                .push(Extrinsic::sign(&key, 0, call, &state.genesis_hash()))
                .unwrap();
        }
    }
    state = builder.finish().state;
    let length = state.params().epoch_length;
    while state.height() + 1 < length {
        let t = state.timestamp_ms() + 1000;
        state = BlockBuilder::new(&state, author, t).unwrap().finish().state;
    }
    state
}

fn bench_settlement(rows: &mut Vec<Row>) {
    let parent = settlement_parent();
    let author = filler_account(0, 0, 9);
    let ts = parent.timestamp_ms() + 1000;
    // Check once that this really is a settlement of every subnet.
    let built = BlockBuilder::new(&parent, author, ts).unwrap().finish();
    let settled = built
        .events
        .iter()
        .filter(|r| matches!(r.event, hypertensor_runtime::Event::EpochSettled { .. }))
        .count();
    let paid = built
        .events
        .iter()
        .filter(|r| matches!(r.event, hypertensor_runtime::Event::RewardPaid { .. }))
        .count();
    assert_eq!(settled, SUBNETS, "every subnet settles");
    assert!(paid >= SUBNETS * NODES, "every node is paid");
    built.state.check_invariants().unwrap();

    let boundary = median(
        (0..REPEATS)
            .map(|_| time(|| BlockBuilder::new(&parent, author, ts).unwrap()).1)
            .collect(),
    );
    let clone = median((0..REPEATS).map(|_| time(|| parent.clone()).1).collect());
    let root = median((0..5).map(|_| time(|| parent.state_root()).1).collect());
    rows.push(Row {
        name: "epoch settlement, 64 subnets x 256 nodes (incl. state clone)",
        value: boundary.as_secs_f64() * 1e3,
        unit: "ms",
        goal: "< 50 ms".into(),
    });
    rows.push(Row {
        name: "  of which: clone of the 16,384-node state",
        value: clone.as_secs_f64() * 1e3,
        unit: "ms",
        goal: "-".into(),
    });
    rows.push(Row {
        name: "state root of the 16,384-node state",
        value: root.as_secs_f64() * 1e3,
        unit: "ms",
        goal: "-".into(),
    });
}

fn bench_extrinsics(rows: &mut Vec<Row>) {
    const SENDERS: usize = 64;
    const PER_SENDER: u64 = 64; // 4096 extrinsics: one full block
    let mut config = GenesisConfig::dev();
    config.params.max_block_extrinsics = 4096;
    let senders: Vec<Keypair> = (0..SENDERS)
        .map(|i| Keypair::dev(&format!("bench-sender-{i}")))
        .collect();
    config
        .accounts
        .extend(senders.iter().map(|k| GenesisAccount {
            account: k.account_id(),
            balance: 1000 * TENSOR,
        }));
    let state = config.build().unwrap().state;
    let genesis_hash = state.genesis_hash();
    let to = Keypair::dev("alice").account_id();
    let xts: Vec<Extrinsic> = (0..PER_SENDER)
        .flat_map(|nonce| {
            senders.iter().map(move |k| {
                Extrinsic::sign(
                    k,
                    nonce,
                    Call::Transfer {
                        to,
                        amount: TENSOR / 10,
                    },
                    &genesis_hash,
                )
            })
        })
        .collect();
    let n = xts.len() as f64;
    let author = Keypair::dev("bob").account_id();

    let run = |check: SignatureCheck| {
        let mut b = BlockBuilder::new(&state, author, 1000).unwrap();
        let start = Instant::now();
        for xt in &xts {
            b.push_with(xt.clone(), check).unwrap();
        }
        (start.elapsed(), b.finish())
    };
    let verified = median((0..5).map(|_| run(SignatureCheck::Verify).0).collect());
    let unchecked = median(
        (0..5)
            .map(|_| run(SignatureCheck::AlreadyVerified).0)
            .collect(),
    );
    let block = run(SignatureCheck::Verify).1.block;
    let import = median(
        (0..5)
            .map(|_| time(|| apply_block(&state, &block).unwrap()).1)
            .collect(),
    );
    let verify_only = median(
        (0..5)
            .map(|_| {
                time(|| {
                    xts.iter()
                        .for_each(|x| x.verify_signature(&genesis_hash).unwrap())
                })
                .1
            })
            .collect(),
    );
    for (name, d) in [
        (
            "extrinsics/s applied, signatures checked (transfers)",
            verified,
        ),
        ("extrinsics/s applied, signatures pre-verified", unchecked),
        (
            "extrinsics/s in apply_block of a 4096-transfer block",
            import,
        ),
        (
            "Ed25519 signature verifications/s alone (reference)",
            verify_only,
        ),
    ] {
        rows.push(Row {
            name,
            value: n / d.as_secs_f64(),
            unit: "1/s",
            goal: "-".into(),
        });
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let mut rows = Vec::new();
    bench_settlement(&mut rows);
    bench_extrinsics(&mut rows);

    println!("\n{:<62} {:>14} {:>5}  goal", "benchmark", "median", "unit");
    for r in &rows {
        println!("{:<62} {:>14.2} {:>5}  {}", r.name, r.value, r.unit, r.goal);
    }
    let json = serde_json::json!({
        "bench": "hypertensor-runtime",
        "results": rows.iter().map(|r| serde_json::json!({
            "name": r.name.trim(), "value": r.value, "unit": r.unit, "goal": r.goal,
        })).collect::<Vec<_>>(),
    });
    // The executable lives in <target>/<profile>/deps/.
    let target = std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(|d| d.to_path_buf()))
        .unwrap_or_else(|| "target".into());
    let path = target.join("bench-runtime.json");
    match std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
