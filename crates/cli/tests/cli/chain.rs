//! The chain node as a real process (`hypertensor chain`) over its real
//! RPC: the whole subnet lifecycle across epochs, crash safety under
//! `kill -9`, and keygen / tx / query as a user runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hypertensor_chain_client::{BlockId, Client, HeaderInfo};
use hypertensor_primitives::{AccountId, H256, Keypair, TENSOR};
use hypertensor_runtime::{
    Call, Event, GenesisConfig, NodeClass, NodeId, Params, SettlementOutcome, SubnetId,
};
use rand::Rng;

/// A running `hypertensor chain` process; killed (SIGKILL) on drop.
struct NodeProcess {
    child: Child,
    url: String,
}

impl NodeProcess {
    fn start(base: &Path, genesis: &Path, block_ms: u64) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hypertensor"))
            .args(["chain", "--base-path"])
            .arg(base)
            .arg("--genesis")
            .arg(genesis)
            .args(["--rpc-addr", "127.0.0.1:0", "--dev"])
            .args(["--block-time-ms", &block_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let lines = crate::process::stdout_lines(&mut child);
        let url = crate::process::chain_rpc_url(&lines, Duration::from_secs(30));
        NodeProcess { child, url }
    }

    fn kill(&mut self) {
        // std's Child::kill sends SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hypertensor-cli-chain-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_genesis(dir: &Path, params: Params) -> PathBuf {
    let mut genesis = GenesisConfig::dev();
    genesis.params = params;
    let path = dir.join("genesis.json");
    std::fs::write(&path, serde_json::to_string_pretty(&genesis).unwrap()).unwrap();
    path
}

fn key(name: &str) -> Keypair {
    Keypair::dev(name)
}

/// Waits until the best block is in `epoch` or later.
async fn wait_for_epoch(client: &Client, epoch: u64) -> u64 {
    for _ in 0..2000 {
        let info = client.epoch_info().await.unwrap();
        if info.epoch >= epoch {
            return info.epoch;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("epoch {epoch} never came");
}

async fn call_ok(client: &Client, who: &Keypair, call: Call) -> Vec<Event> {
    let name = call.name();
    let inclusion = client.sign_and_watch(who, call).await.unwrap();
    assert!(
        inclusion.failure().is_none(),
        "{name} failed: {:?}",
        inclusion.failure()
    );
    inclusion.events.into_iter().map(|r| r.event).collect()
}

fn node_id(client_nodes: &[hypertensor_runtime::SubnetNode], owner: &AccountId) -> NodeId {
    client_nodes.iter().find(|n| n.owner == *owner).unwrap().id
}

async fn assert_conserved(client: &Client) {
    let t = client.totals().await.unwrap();
    assert_eq!(
        t.accounted(),
        Some(t.issuance),
        "issuance not conserved: {t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_lives_through_epochs_over_rpc_with_rewards_and_conserved_issuance() {
    let dir = temp_dir("lifecycle");
    let params = Params {
        block_time_ms: 100,
        // Two-second epochs: room for a proposal and three attestations
        // even on a loaded test machine.
        epoch_length: 20,
        idle_epochs: 1,
        included_epochs: 1,
        ..Params::devnet()
    };
    let genesis = write_genesis(&dir, params.clone());
    let node = NodeProcess::start(&dir.join("db"), &genesis, 100);
    let client = Client::connect(&node.url).await.unwrap();
    let alice = key("alice");
    let validators = [key("bob"), key("charlie"), key("dave")];
    let newcomer = key("eve");
    let peer = |k: &Keypair| key(&format!("peer-of-{}", k.account_id())).peer_id();

    // Register the subnet naming three initial validators; register and
    // activate their nodes and a fourth, ordinary one; activate the subnet.
    let events = call_ok(
        &client,
        &alice,
        Call::RegisterSubnet {
            name: "llama".into(),
            model: "hf:org/model".into(),
            min_stake: 100 * TENSOR,
            max_stake: 1000 * TENSOR,
            initial_validators: validators.iter().map(peer).collect(),
        },
    )
    .await;
    let subnet: SubnetId = events
        .iter()
        .find_map(|e| match e {
            Event::SubnetRegistered { subnet, .. } => Some(*subnet),
            _ => None,
        })
        .expect("SubnetRegistered event");
    for owner in validators.iter().chain([&newcomer]) {
        call_ok(
            &client,
            owner,
            Call::RegisterSubnetNode {
                subnet,
                hotkey: owner.account_id(),
                peer_id: peer(owner),
                client_peer_id: None,
                stake: 500 * TENSOR,
            },
        )
        .await;
    }
    let registered_epoch = client.epoch_info().await.unwrap().epoch;
    wait_for_epoch(&client, registered_epoch + 1).await;
    let nodes = client.subnet_nodes(subnet).await.unwrap();
    for owner in validators.iter().chain([&newcomer]) {
        let node = node_id(&nodes, &owner.account_id());
        call_ok(&client, owner, Call::ActivateSubnetNode { subnet, node }).await;
    }
    call_ok(&client, &alice, Call::ActivateSubnet { subnet }).await;
    let activated_epoch = client.epoch_info().await.unwrap().epoch;
    let newcomer_id = node_id(
        &client.subnet_nodes(subnet).await.unwrap(),
        &newcomer.account_id(),
    );
    assert!(
        client
            .proof_of_stake(subnet, &peer(&newcomer), NodeClass::Idle)
            .await
            .unwrap()
    );

    // Epoch after epoch: the elected validator proposes scores for every
    // scored node, the rest of the snapshot attests. Rewards paid at each
    // settlement must show in the owners' balances exactly.
    let everyone: Vec<&Keypair> = validators.iter().chain([&newcomer]).collect();
    let mut classes = Vec::new();
    let mut in_consensus = 0;
    let mut rewarded_newcomer = false;
    let mut epoch = wait_for_epoch(&client, activated_epoch + 1).await;
    while epoch <= activated_epoch + 5 {
        let nodes = client.subnet_nodes(subnet).await.unwrap();
        classes.push(nodes.iter().find(|n| n.id == newcomer_id).unwrap().class);
        let elected = client
            .elected_validator(subnet, None)
            .await
            .unwrap()
            .expect("an active subnet with validators elects one");
        let data = client.consensus_data(subnet, None).await.unwrap().unwrap();
        assert_eq!(data.epoch, epoch);
        let scores: Vec<(NodeId, u128)> = nodes
            .iter()
            .filter(|n| n.class.is_scored())
            .map(|n| (n.id, 1000 + u128::from(n.id)))
            .collect();
        let proposer = everyone
            .iter()
            .find(|k| k.account_id() == elected.hotkey)
            .unwrap();
        call_ok(
            &client,
            proposer,
            Call::ProposeAttestation {
                subnet,
                epoch,
                scores,
            },
        )
        .await;
        let attesters: Vec<&Keypair> = data
            .snapshot
            .iter()
            .filter(|id| **id != elected.id)
            .map(|member| {
                let owner = nodes.iter().find(|n| n.id == *member).unwrap().owner;
                *everyone.iter().find(|k| k.account_id() == owner).unwrap()
            })
            .collect();
        let attests: Vec<_> = attesters
            .into_iter()
            .map(|k| {
                let (client, k) = (client.clone(), k.clone());
                tokio::spawn(
                    async move { call_ok(&client, &k, Call::Attest { subnet, epoch }).await },
                )
            })
            .collect();
        for attest in attests {
            attest.await.unwrap();
        }
        let data = client
            .consensus_data(subnet, Some(epoch))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            data.attestations.len(),
            data.snapshot.len(),
            "everyone attested"
        );
        // Balances before settlement (propose and attest are free when valid).
        let mut before = BTreeMap::new();
        for k in &everyone {
            before.insert(
                k.account_id(),
                client.account(&k.account_id()).await.unwrap().free,
            );
        }
        assert_conserved(&client).await;
        epoch = wait_for_epoch(&client, epoch + 1).await;
        assert_eq!(
            epoch,
            data.epoch + 1,
            "the epoch's calls finished within it"
        );
        // Settlement is in the first block of the new epoch.
        let events = client
            .events(Some(BlockId::Height(epoch * params.epoch_length)))
            .await
            .unwrap()
            .unwrap();
        let outcome = client
            .consensus_data(subnet, Some(data.epoch))
            .await
            .unwrap()
            .unwrap()
            .outcome;
        if let Some(SettlementOutcome::InConsensus { .. }) = outcome {
            in_consensus += 1;
        }
        let mut paid: BTreeMap<AccountId, u128> = BTreeMap::new();
        for record in &events {
            if let Event::RewardPaid {
                account, amount, ..
            } = &record.event
            {
                *paid.entry(*account).or_default() += amount;
            }
        }
        for (account, free_before) in &before {
            let now = client.account(account).await.unwrap().free;
            let reward = paid.get(account).copied().unwrap_or(0);
            assert_eq!(
                now,
                free_before + reward,
                "balance of {account} moved by its rewards only"
            );
        }
        if paid.contains_key(&newcomer.account_id()) {
            rewarded_newcomer = true;
        }
        assert!(
            !paid.is_empty() || !matches!(outcome, Some(SettlementOutcome::InConsensus { .. }))
        );
    }
    assert_conserved(&client).await;
    assert!(in_consensus >= 4, "{in_consensus} epochs in consensus");
    // Idle, then Included (scored and paid), then Validator.
    let first = |c| classes.iter().position(|x| *x == c);
    let (idle, included, validator) = (
        first(NodeClass::Idle),
        first(NodeClass::Included),
        first(NodeClass::Validator),
    );
    assert!(
        idle < included && included < validator && idle.is_some(),
        "{classes:?}"
    );
    assert!(rewarded_newcomer, "the newcomer was paid once scored");
    let nodes = client.subnet_nodes(subnet).await.unwrap();
    let final_class = nodes.iter().find(|n| n.id == newcomer_id).unwrap().class;
    assert_eq!(final_class, NodeClass::Validator);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Streams transfers from several dev accounts until the connection dies.
async fn stream_transfers(client: Client, genesis: H256) {
    let senders: Vec<Keypair> = ["bob", "charlie", "dave", "eve"]
        .iter()
        .map(|n| key(n))
        .collect();
    let to = key("ferdie").account_id();
    let mut nonces = Vec::new();
    for k in &senders {
        match client.account(&k.account_id()).await {
            Ok(a) => nonces.push(a.next_nonce),
            Err(_) => return,
        }
    }
    loop {
        for (k, nonce) in senders.iter().zip(nonces.iter_mut()) {
            let xt = hypertensor_runtime::Extrinsic::sign(
                k,
                *nonce,
                Call::Transfer {
                    to,
                    amount: TENSOR / 1000,
                },
                &genesis,
            );
            match client.submit_extrinsic(&xt).await {
                Ok(_) => *nonce += 1,
                Err(hypertensor_chain_client::Error::Rpc(_)) => {
                    if let Ok(a) = client.account(&k.account_id()).await {
                        *nonce = a.next_nonce;
                    }
                }
                Err(_) => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Records every new head until the connection dies.
async fn record_heads(
    client: Client,
    seen: std::sync::Arc<std::sync::Mutex<BTreeMap<u64, HeaderInfo>>>,
) {
    let Ok(mut heads) = client.subscribe_new_heads().await else {
        return;
    };
    while let Some(Ok(head)) = heads.next().await {
        seen.lock().unwrap().insert(head.header.height, head);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_reported_block() {
    let dir = temp_dir("crash");
    let genesis = write_genesis(
        &dir,
        Params {
            block_time_ms: 50,
            ..Params::devnet()
        },
    );
    let base = dir.join("db");
    let seed: u64 = rand::rng().random();
    println!("crash test seed {seed}");
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<u64, HeaderInfo>::new()));
    let mut total_transfers_seen = 0;
    for round in 0..5 {
        let mut node = NodeProcess::start(&base, &genesis, 50);
        let client = Client::connect(&node.url).await.unwrap();
        // Everything reported before the kill is still there, unchanged.
        {
            let reported = seen.lock().unwrap().clone();
            for (height, head) in &reported {
                let stored = client.header(Some(BlockId::Height(*height))).await.unwrap();
                assert_eq!(
                    stored.as_ref(),
                    Some(head),
                    "round {round}: block {height} after restart"
                );
            }
            if let Some((height, _)) = reported.last_key_value() {
                assert!(client.health().await.unwrap().height >= *height);
            }
        }
        let genesis_hash = client.health().await.unwrap().genesis_hash;
        let recorder = tokio::spawn(record_heads(client.clone(), std::sync::Arc::clone(&seen)));
        let streamer = tokio::spawn(stream_transfers(client.clone(), genesis_hash));
        let wait = rng.random_range(300..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let ferdie = client.account(&key("ferdie").account_id()).await.unwrap();
        total_transfers_seen = total_transfers_seen.max(ferdie.free);
        node.kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), recorder).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), streamer).await;
    }
    // Final restart: production goes on past every reported block.
    let node = NodeProcess::start(&base, &genesis, 50);
    let client = Client::connect(&node.url).await.unwrap();
    let reported = seen.lock().unwrap().clone();
    assert!(
        reported.len() > 10,
        "blocks were reported: {}",
        reported.len()
    );
    for (height, head) in &reported {
        let stored = client.header(Some(BlockId::Height(*height))).await.unwrap();
        assert_eq!(stored.as_ref(), Some(head), "final: block {height}");
    }
    let last = *reported.keys().last().unwrap();
    let mut heads = client.subscribe_new_heads().await.unwrap();
    loop {
        let head = heads.next().await.unwrap().unwrap();
        if head.header.height > last + 3 {
            break;
        }
    }
    let ferdie = client.account(&key("ferdie").account_id()).await.unwrap();
    assert!(ferdie.free > 1_000_000 * TENSOR, "transfers went through");
    assert!(
        ferdie.free >= total_transfers_seen,
        "no transfer seen committed was lost"
    );
    assert_conserved(&client).await;
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keygen_tx_and_query_work_from_the_command_line() {
    let dir = temp_dir("cli");
    let genesis = write_genesis(
        &dir,
        Params {
            block_time_ms: 100,
            ..Params::devnet()
        },
    );
    let node = NodeProcess::start(&dir.join("db"), &genesis, 100);
    let rpc = node.url.clone();
    let key_file = dir.join("operator.key");
    let key_path = key_file.to_str().unwrap();
    let (ok, out, err) = run_cli(&["keygen", "--output", key_path]);
    assert!(ok, "{err}");
    let account = out
        .lines()
        .find_map(|l| l.strip_prefix("account id: "))
        .unwrap()
        .trim()
        .to_string();
    assert!(out.contains("peer id:    12D3KooW"), "{out}");
    let (ok, _, err) = run_cli(&["keygen", "--output", key_path]);
    assert!(
        !ok && err.contains("--force"),
        "never overwrites a key silently: {err}"
    );
    // Fund the new account from alice, then spend from it with the key file.
    let (ok, out, err) = run_cli(&[
        "tx", "--rpc", &rpc, "--dev", "alice", "transfer", "--to", &account, "--amount", "100",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("transfer 100 TENSOR"), "{out}");
    assert!(out.contains("success"), "{out}");
    let (ok, out, err) = run_cli(&[
        "tx", "--rpc", &rpc, "--key", key_path, "transfer", "--to", "bob", "--amount", "0.5",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("transfer 0.5 TENSOR"), "{out}");
    let (ok, out, err) = run_cli(&["query", "--rpc", &rpc, "--json", "account", &account]);
    assert!(ok, "{err}");
    let info: hypertensor_chain_client::AccountInfo = serde_json::from_str(&out).unwrap();
    assert_eq!(
        info.free,
        100 * TENSOR - TENSOR / 2 - Params::devnet().tx_base_fee
    );
    assert_eq!(info.nonce, 1);
    let (ok, out, _) = run_cli(&["query", "--rpc", &rpc, "account", &account]);
    assert!(ok);
    assert!(out.contains("free:       99.499 TENSOR"), "{out}");
    let (ok, out, _) = run_cli(&["query", "--rpc", &rpc, "totals"]);
    assert!(ok && out.contains("conserved  yes"), "{out}");
    // A call that fails in its block: reported, non-zero exit.
    let (ok, out, err) = run_cli(&[
        "tx",
        "--rpc",
        &rpc,
        "--dev",
        "bob",
        "activate-subnet",
        "--subnet",
        "9",
    ]);
    assert!(!ok, "{out}");
    assert!(err.contains("the call failed"), "{err}");
    // Refused at submission: a clear error, nothing included.
    let (ok, _, err) = run_cli(&[
        "tx", "--rpc", &rpc, "--key", key_path, "transfer", "--to", "bob", "--amount", "1000",
    ]);
    assert!(!ok);
    assert!(err.contains("insufficient balance"), "{err}");
    let (ok, _, err) = run_cli(&[
        "tx", "--rpc", &rpc, "--dev", "alice", "transfer", "--to", "bob", "--amount", "1e3",
    ]);
    assert!(!ok && err.contains("invalid amount"), "{err}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_call_can_be_made_with_tx() {
    let dir = temp_dir("calls");
    let genesis = write_genesis(
        &dir,
        Params {
            block_time_ms: 100,
            ..Params::devnet()
        },
    );
    let node = NodeProcess::start(&dir.join("db"), &genesis, 100);
    let rpc = node.url.clone();
    let tx = |who: &str, args: &[&str]| {
        let mut all = vec!["tx", "--rpc", rpc.as_str(), "--dev", who];
        all.extend_from_slice(args);
        run_cli(&all)
    };
    let peer = key("calls-peer").peer_id().to_string();
    let ok = |(ok, out, err): (bool, String, String)| {
        assert!(ok, "{out}\n{err}");
        out
    };
    let out = ok(tx(
        "alice",
        &[
            "register-subnet",
            "--name",
            "s",
            "--model",
            "m",
            "--min-stake",
            "100",
            "--max-stake",
            "1000",
            "--initial-validator",
            &peer,
        ],
    ));
    assert!(out.contains("subnet_registered"), "{out}");
    let out = ok(tx(
        "bob",
        &[
            "register-node",
            "--subnet",
            "1",
            "--hotkey",
            "bob",
            "--peer-id",
            &peer,
            "--stake",
            "150.5",
        ],
    ));
    assert!(out.contains("node_registered"), "{out}");
    ok(tx(
        "bob",
        &[
            "add-stake",
            "--subnet",
            "1",
            "--node",
            "1",
            "--amount",
            "10",
        ],
    ));
    ok(tx(
        "bob",
        &[
            "remove-stake",
            "--subnet",
            "1",
            "--node",
            "1",
            "--amount",
            "0.5",
        ],
    ));
    let (_, out, _) = run_cli(&["query", "--rpc", &rpc, "nodes", "1"]);
    assert!(out.contains("160"), "stake 150.5 + 10 - 0.5: {out}");
    ok(tx("bob", &["remove-node", "--subnet", "1", "--node", "1"]));
    let (_, out, _) = run_cli(&["query", "--rpc", &rpc, "--json", "account", "bob"]);
    let info: hypertensor_chain_client::AccountInfo = serde_json::from_str(&out).unwrap();
    // 0.5 from remove-stake, 160 from remove-node.
    assert_eq!(
        info.unbonding.iter().map(|e| e.amount).sum::<u128>(),
        160 * TENSOR + TENSOR / 2
    );
    // Calls whose state checks fail are included, pay the fee and say why.
    for (who, args, error) in [
        ("bob", vec!["claim-unbonded"], "nothing"),
        (
            "alice",
            vec!["activate-subnet", "--subnet", "1"],
            "activated",
        ),
        (
            "bob",
            vec!["activate-node", "--subnet", "1", "--node", "1"],
            "node",
        ),
        (
            "bob",
            vec!["propose", "--subnet", "1", "--scores", "1=5"],
            "FAILED",
        ),
        ("bob", vec!["attest", "--subnet", "1"], "FAILED"),
    ] {
        let (ok, out, err) = tx(who, &args);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains("FAILED") && (out.contains(error) || err.contains(error)),
            "{args:?}: {out}\n{err}"
        );
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
