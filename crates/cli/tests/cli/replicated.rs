//! Four chain validators as real processes on loopback, each with its own
//! store, finalizing with simplex over real sockets: transfers submitted
//! round-robin to all four, `kill -9` of one mid-load, its restart and
//! catch-up, and the same blocks and state roots everywhere.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hypertensor_chain_client::{BlockId, Client};
use hypertensor_primitives::{H256, Keypair, TENSOR};
use hypertensor_runtime::Call;

use crate::process::{chain_rpc_url, stdout_lines};

const VALIDATORS: usize = 4;
const BLOCK_MS: u64 = 250;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hypertensor-cli-replicated-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_key(path: &Path, key: &Keypair) {
    std::fs::write(path, key.to_protobuf_encoding()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A running validator process; killed (SIGKILL) on drop.
struct Validator {
    child: Child,
    url: String,
}

impl Validator {
    fn start(dir: &Path, index: usize, genesis: &Path, rpc_port: u16) -> Validator {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hypertensor"));
        command
            .arg("chain")
            .arg("--genesis")
            .arg(genesis)
            .arg("--validator-key")
            .arg(dir.join(format!("validator-{index}.key")))
            .arg("--base-path")
            .arg(dir.join(format!("db-{index}")))
            .args(["--rpc-addr", &format!("127.0.0.1:{rpc_port}")]);
        Validator::spawn(command)
    }

    /// A full node following `urls`.
    fn full_node(dir: &Path, genesis: &Path, urls: &str) -> Validator {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hypertensor"));
        command
            .arg("chain")
            .arg("--genesis")
            .arg(genesis)
            .args(["--full-node", "--chain", urls])
            .arg("--base-path")
            .arg(dir.join("db-full"))
            .args(["--rpc-addr", "127.0.0.1:0"]);
        Validator::spawn(command)
    }

    fn spawn(mut command: Command) -> Validator {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let lines = stdout_lines(&mut child);
        let url = chain_rpc_url(&lines, Duration::from_secs(30));
        Validator { child, url }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn height(client: &Client) -> u64 {
    client
        .header(None)
        .await
        .unwrap()
        .map_or(0, |h| h.header.height)
}

async fn wait_for_height(clients: &[&Client], target: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut lowest = u64::MAX;
        for c in clients {
            lowest = lowest.min(height(c).await);
        }
        if lowest >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "finality stalled at {lowest} (target {target})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The hash and state root of block `height` on `client`.
async fn block_at(client: &Client, height: u64) -> (H256, H256) {
    let info = client
        .header(Some(BlockId::Height(height)))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no block {height}"));
    (info.hash, info.header.state_root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_finalize_the_same_chain_through_a_kill_and_a_restart() {
    let dir = temp_dir("four");
    let keys: Vec<Keypair> = (0..VALIDATORS)
        .map(|i| Keypair::dev(&format!("chain-validator-{i}")))
        .collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hypertensor"));
    command.args(["chain", "genesis", "--block-time-ms", &BLOCK_MS.to_string()]);
    for (i, key) in keys.iter().enumerate() {
        write_key(&dir.join(format!("validator-{i}.key")), key);
        command.args([
            "--validator",
            &format!("{}@127.0.0.1:{}", key.account_id(), free_port()),
        ]);
    }
    let genesis = dir.join("genesis.json");
    let status = command.arg("--output").arg(&genesis).status().unwrap();
    assert!(status.success(), "chain genesis failed");

    let rpc_ports: Vec<u16> = (0..VALIDATORS).map(|_| free_port()).collect();
    let mut validators: Vec<Validator> = (0..VALIDATORS)
        .map(|i| Validator::start(&dir, i, &genesis, rpc_ports[i]))
        .collect();
    let mut clients = Vec::new();
    for v in &validators {
        clients.push(Client::connect(&v.url).await.unwrap());
    }
    wait_for_height(
        &clients.iter().collect::<Vec<_>>(),
        3,
        Duration::from_secs(60),
    )
    .await;
    // A full node follows all four (failing over), verifying certificates.
    let urls = validators
        .iter()
        .map(|v| v.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let full = Validator::full_node(&dir, &genesis, &urls);
    let full_client = Client::connect(&full.url).await.unwrap();

    // Transfers round-robin to all four, one sender per validator so
    // nonces never race; the third validator is killed halfway.
    let senders = ["alice", "bob", "charlie", "dave"].map(Keypair::dev);
    let recipient = Keypair::dev("eve").account_id();
    let mut included = Vec::new();
    let killed = 2;
    for round in 0..6 {
        if round == 3 {
            validators[killed].kill();
        }
        for (i, sender) in senders.iter().enumerate() {
            if round >= 3 && i == killed {
                continue;
            }
            let inclusion = clients[i]
                .sign_and_watch(
                    sender,
                    Call::Transfer {
                        to: recipient,
                        amount: TENSOR,
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("transfer {round} via validator {i}: {e}"));
            included.push(inclusion);
        }
    }
    let target = {
        let survivors: Vec<&Client> = clients
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != killed)
            .map(|(_, c)| c)
            .collect();
        let before = height(survivors[0]).await;
        wait_for_height(&survivors, before + 5, Duration::from_secs(60)).await;
        height(survivors[0]).await + 3
    };

    // The killed validator comes back on its own store and catches up.
    validators[killed] = Validator::start(&dir, killed, &genesis, rpc_ports[killed]);
    clients[killed] = Client::connect(&validators[killed].url).await.unwrap();
    wait_for_height(
        &clients.iter().collect::<Vec<_>>(),
        target,
        Duration::from_secs(90),
    )
    .await;

    // A transfer submitted to the full node reaches a block.
    let via_full = full_client
        .sign_and_watch(
            &Keypair::dev("ferdie"),
            Call::Transfer {
                to: recipient,
                amount: TENSOR,
            },
        )
        .await
        .expect("a transfer through the full node");
    included.push(via_full);
    let target = target.max(height(&clients[0]).await);
    wait_for_height(
        &clients.iter().chain([&full_client]).collect::<Vec<_>>(),
        target,
        Duration::from_secs(60),
    )
    .await;

    // The same blocks and state roots at every height, on all four and
    // on the full node.
    for h in 1..=target {
        let expected = block_at(&clients[0], h).await;
        for (i, c) in clients.iter().enumerate().skip(1) {
            assert_eq!(
                block_at(c, h).await,
                expected,
                "validator {i} differs at {h}"
            );
        }
        assert_eq!(
            block_at(&full_client, h).await,
            expected,
            "the full node differs at {h}"
        );
    }
    // Every reported inclusion is in that block on all four.
    for inclusion in &included {
        for (i, c) in clients.iter().enumerate() {
            let found = c
                .find_in_block(BlockId::Hash(inclusion.block), inclusion.extrinsic)
                .await
                .unwrap();
            assert!(
                found.is_some(),
                "validator {i} lacks transfer {} of block {}",
                inclusion.extrinsic,
                inclusion.height
            );
        }
    }
    let eve = clients[killed].account(&recipient).await.unwrap();
    assert_eq!(
        eve.free,
        1_000_000 * TENSOR + included.len() as u128 * TENSOR
    );
    // Blocks came from more than one proposer.
    let mut authors = std::collections::BTreeSet::new();
    for h in 1..=target {
        let info = clients[0]
            .header(Some(BlockId::Height(h)))
            .await
            .unwrap()
            .unwrap();
        authors.insert(info.header.author);
    }
    assert!(authors.len() >= 3, "authors: {authors:?}");

    // Two of four down: no quorum, so nothing is finalized; one back and
    // finality resumes on the same chain.
    validators[0].kill();
    validators[1].kill();
    let stalled_at = height(&clients[2]).await;
    tokio::time::sleep(Duration::from_millis(BLOCK_MS * 12)).await;
    assert_eq!(
        height(&clients[2]).await,
        stalled_at,
        "finalized without a quorum"
    );
    validators[0] = Validator::start(&dir, 0, &genesis, rpc_ports[0]);
    clients[0] = Client::connect(&validators[0].url).await.unwrap();
    wait_for_height(
        &[&clients[0], &clients[2], &clients[3]],
        stalled_at + 3,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        block_at(&clients[0], stalled_at).await,
        block_at(&clients[2], stalled_at).await
    );

    // A validator started on another genesis is told so by the others,
    // named with both hashes, and refuses to join.
    validators[3].kill();
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&genesis).unwrap()).unwrap();
    other["params"]["block_time_ms"] = serde_json::json!(BLOCK_MS + 1);
    let other_genesis = dir.join("other-genesis.json");
    std::fs::write(&other_genesis, other.to_string()).unwrap();
    let ours = clients[0].health().await.unwrap().genesis_hash;
    let mut odd = Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .arg("chain")
        .arg("--genesis")
        .arg(&other_genesis)
        .arg("--validator-key")
        .arg(dir.join("validator-3.key"))
        .arg("--base-path")
        .arg(dir.join("db-odd"))
        .args(["--rpc-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = odd.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = odd.kill();
            panic!("a validator on another genesis kept running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(odd.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("genesis mismatch"), "{stderr}");
    assert!(stderr.contains(&ours.to_string()), "{stderr}");
    drop(full);
    let _ = std::fs::remove_dir_all(&dir);
}
