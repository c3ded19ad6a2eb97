//! Denial of service and bad input of issue 11, each reproduced over the
//! real RPC (sockets on loopback), with an honest client served after and
//! nothing changed or lost.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hypertensor_chain::{DatabaseProblem, Error as NodeError, Node};
use hypertensor_chain_client::api::codes;
use hypertensor_chain_client::{Client, Error};
use hypertensor_primitives::{Keypair, TENSOR};
use hypertensor_runtime::{Call, Extrinsic, GenesisAccount};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{code, config, post, rpc, start, temp_dir};

/// Reads until the server closes the socket (or `limit` passes); returns
/// what arrived and how long it took.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_nonces_from_many_cheap_accounts_cannot_keep_an_honest_transfer_out() {
    let dir = temp_dir("pin");
    let mut cfg = config(dir.clone(), 100);
    let attackers: Vec<Keypair> = (0..128)
        .map(|i| Keypair::dev(&format!("pinner-{i}")))
        .collect();
    let fee = cfg.genesis.params.tx_base_fee;
    let stake = 64 * (fee + 1);
    cfg.genesis
        .accounts
        .extend(attackers.iter().map(|k| GenesisAccount {
            account: k.account_id(),
            balance: stake,
        }));
    cfg.pool.capacity = 1024;
    cfg.pool.future_lifetime_blocks = 40;
    let (node, client) = start(cfg).await;
    let genesis = node.genesis_hash();
    let to = Keypair::dev("ferdie").account_id();
    // Every attacker sends nonces 1..=32, never nonce 0: none ever pays
    // (16 per account are admitted: twice what the pool holds).
    let url = format!("ws://{}", node.rpc_addr());
    let mut lanes = Vec::new();
    for lane in 0..4 {
        let keys: Vec<Keypair> = attackers.iter().skip(lane).step_by(4).cloned().collect();
        let url = url.clone();
        lanes.push(tokio::spawn(async move {
            let c = Client::connect(&url).await.unwrap();
            let mut admitted = 0;
            for k in &keys {
                let xts: Vec<Extrinsic> = (1..=32)
                    .map(|n| Extrinsic::sign(k, n, Call::Transfer { to, amount: 1 }, &genesis))
                    .collect();
                let answers =
                    futures_util::future::join_all(xts.iter().map(|x| c.submit_extrinsic(x))).await;
                for a in answers {
                    match a {
                        Ok(_) => admitted += 1,
                        Err(Error::Rpc(e)) => assert!(
                            e.code == codes::FUTURE_NONCE || e.code == codes::POOL_FULL,
                            "{e}"
                        ),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            admitted
        }));
    }
    let spam_started = Instant::now();
    let mut admitted = 0;
    for lane in lanes {
        admitted += lane.await.unwrap();
    }
    println!("spam took {:?}", spam_started.elapsed());
    let health = client.health().await.unwrap();
    assert!(admitted >= 1024, "the pool filled up ({admitted} admitted)");
    assert_eq!(health.pending_extrinsics, 1024, "full of future nonces");
    // An honest transfer is admitted and included in the next blocks.
    let bob = Keypair::dev("bob");
    let honest = Extrinsic::sign(&bob, 0, Call::Transfer { to, amount: TENSOR }, &genesis);
    let started = Instant::now();
    let included = client
        .submit_and_watch(&honest, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(included.failure().is_none());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The future ones expire after their lifetime; no attacker was charged.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.health().await.unwrap().pending_extrinsics > 0 {
        assert!(Instant::now() < deadline, "future extrinsics expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for k in attackers.iter().step_by(17) {
        let a = client.account(&k.account_id()).await.unwrap();
        assert_eq!((a.free, a.nonce), (stake, 0));
    }
    let totals = client.totals().await.unwrap();
    assert_eq!(totals.accounted(), Some(totals.issuance));
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_300_idle_websockets_does_not_lock_out_another_client() {
    let dir = temp_dir("ws-flood");
    let (node, client) = start(config(dir.clone(), 200)).await;
    let addr = node.rpc_addr();
    let url = format!("ws://{addr}");
    // 300 idle WebSocket connections from 127.0.0.2.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let stream = connect_from([127, 0, 0, 2], addr).await.unwrap();
        match tokio_tungstenite::client_async(url.as_str(), stream).await {
            Ok((ws, _)) => held.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 429);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(held.len(), 64, "the per-address cap");
    assert_eq!(refused, 236);
    // Another address still connects and is served.
    let other = Client::connect(&url).await.unwrap();
    assert!(other.health().await.unwrap().height > 0 || client.health().await.is_ok());
    // The client's error for a refusal says the node refused, and why.
    let mut extra = Vec::new();
    for _ in 0..64 {
        extra.push(Client::connect(&url).await);
    }
    let err = extra
        .into_iter()
        .find_map(|r| r.err())
        .expect("127.0.0.1 reaches its cap too");
    let text = err.to_string();
    assert!(matches!(err, Error::Refused { status: 429, .. }), "{text}");
    assert!(
        text.contains("refused") && text.contains("limit per address"),
        "{text}"
    );
    assert!(!text.contains("running"), "{text}");
    drop(held);
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_without_subscription_is_closed_and_a_subscriber_is_kept() {
    let dir = temp_dir("ws-idle");
    let mut cfg = config(dir.clone(), 100);
    cfg.rpc.ws_idle_timeout = Duration::from_millis(400);
    let (node, _client) = start(cfg).await;
    let url = format!("ws://{}", node.rpc_addr());
    let (mut idle, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let subscriber = Client::connect(&url).await.unwrap();
    let mut heads = subscriber.subscribe_new_heads().await.unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match idle.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was closed");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Well past the timeout, the subscriber still gets heads.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let head = tokio::time::timeout(Duration::from_secs(2), heads.next())
        .await
        .unwrap();
    assert!(head.is_some_and(|h| h.is_ok()));
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_counts_as_its_number_of_calls_against_the_rate_limit() {
    let dir = temp_dir("rate-batch");
    let mut cfg = config(dir.clone(), 1000);
    cfg.rpc.requests_per_second = 1;
    cfg.rpc.burst = 10;
    let node = Node::start(cfg).await.unwrap();
    let addr = node.rpc_addr();
    let call = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"system_health\"}";
    let batch = |n: usize| format!("[{}]", vec![call; n].join(","));
    let a = rpc(addr, &batch(8)).await;
    assert_eq!(a.as_array().unwrap().len(), 8);
    let (status, body) = post(addr, batch(8).as_bytes()).await;
    assert_eq!(status, 429, "8 + 8 calls exceed a burst of 10: {body}");
    let a: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code(&a), codes::RATE_LIMITED);
    // The two tokens left still serve single calls.
    assert!(rpc(addr, call).await["result"]["height"].is_u64());
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_and_a_huge_declared_length_is_refused_at_once() {
    let dir = temp_dir("slow");
    let mut cfg = config(dir.clone(), 200);
    cfg.rpc.header_timeout = Duration::from_millis(300);
    cfg.rpc.body_timeout = Duration::from_millis(300);
    let node = Node::start(cfg).await.unwrap();
    let addr = node.rpc_addr();
    // Half a head, then nothing.
    let mut head = TcpStream::connect(addr).await.unwrap();
    head.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .await
        .unwrap();
    // A whole head and half the declared body.
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
    )
    .await
    .unwrap();
    // A declared length of 1 GB, with no body at all.
    let mut huge = TcpStream::connect(addr).await.unwrap();
    huge.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = read_until_closed(&mut huge, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(&codes::REQUEST_TOO_LARGE.to_string()),
        "{answer}"
    );
    assert!(
        took < Duration::from_millis(250),
        "refused at once, not after the body: {took:?}"
    );
    let (_, took) = read_until_closed(&mut head, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "half head closed: {took:?}");
    let (answer, took) = read_until_closed(&mut body, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "half body closed: {took:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // Honest requests are served throughout.
    let a = rpc(
        addr,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"system_health\"}",
    )
    .await;
    assert!(a["result"]["height"].is_u64(), "{a}");
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_is_followed_exactly_and_errors_name_the_real_fault() {
    let dir = temp_dir("exact");
    let (node, client) = start(config(dir.clone(), 150)).await;
    let addr = node.rpc_addr();
    let genesis = node.genesis_hash();
    // "id": null is a request, answered with id null.
    let a = rpc(
        addr,
        "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"system_health\"}",
    )
    .await;
    assert!(a["result"]["height"].is_u64(), "{a}");
    assert!(a.get("id").is_some_and(|id| id.is_null()), "{a}");
    // An escaped version string is "2.0".
    let a = rpc(
        addr,
        "{\"jsonrpc\":\"2\\u002e0\",\"id\":1,\"method\":\"system_health\"}",
    )
    .await;
    assert!(a["result"]["height"].is_u64(), "{a}");
    // Extra params are invalid params, naming the arity.
    let a = rpc(
        addr,
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"system_health\",\"params\":[1]}",
    )
    .await;
    assert_eq!(code(&a), codes::INVALID_PARAMS);
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 0"),
        "{a}"
    );
    let alice = Keypair::dev("alice").account_id();
    let a = rpc(
        addr,
        &format!("{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"state_getAccount\",\"params\":[\"{alice}\",true]}}"),
    )
    .await;
    assert_eq!(code(&a), codes::INVALID_PARAMS);
    // An extrinsic with an unknown member is refused, not included.
    let bob = Keypair::dev("bob");
    let before = client.account(&bob.account_id()).await.unwrap();
    let xt = Extrinsic::sign(
        &bob,
        0,
        Call::Transfer {
            to: alice,
            amount: TENSOR,
        },
        &genesis,
    );
    let mut text = serde_json::to_string(&xt).unwrap();
    text.insert_str(text.len() - 1, ",\"tip\":1000");
    let a = rpc(
        addr,
        &format!("{{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"author_submitExtrinsic\",\"params\":[{text}]}}"),
    )
    .await;
    assert_eq!(code(&a), codes::INVALID_PARAMS);
    assert!(
        a["error"]["message"].as_str().unwrap().contains("tip"),
        "{a}"
    );
    // Account ids: the fault is named, not a byte count.
    let upper = format!("0X{}", &alice.to_string()[2..]);
    let a = rpc(
        addr,
        &format!("{{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"state_getAccount\",\"params\":[\"{upper}\"]}}"),
    )
    .await;
    let m = a["error"]["message"].as_str().unwrap();
    assert!(m.contains("lowercase `0x`") && !m.contains("33"), "{m}");
    let a = rpc(
        addr,
        "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"state_getAccount\",\"params\":[\"bob\"]}",
    )
    .await;
    let m = a["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("`bob` is not hex") && !m.contains("got 1"),
        "{m}"
    );
    // A transfer to oneself is refused at submission; no fee is charged.
    let own = Extrinsic::sign(
        &bob,
        0,
        Call::Transfer {
            to: bob.account_id(),
            amount: TENSOR,
        },
        &genesis,
    );
    let Err(Error::Rpc(e)) = client.submit_extrinsic(&own).await else {
        panic!("a self transfer was admitted")
    };
    assert_eq!(e.code, codes::INVALID_CALL);
    assert!(e.message.contains("to oneself"), "{}", e.message);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.account(&bob.account_id()).await.unwrap(), before);
    assert_eq!(client.health().await.unwrap().pending_extrinsics, 0);
    // The honest version of the same transfer goes in.
    let included = client
        .submit_and_watch(&xt, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(included.failure().is_none());
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_foreign_and_damaged_database_files_stop_the_node_naming_the_file() {
    let dir = temp_dir("bad-db");
    // A chain with a block, then stopped (on a busy machine the first
    // block can take longer than a few block times: wait for it).
    let (node, client) = start(config(dir.clone(), 50)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.header(None).await.unwrap().unwrap().header.height == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no block in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
    node.stop().await.unwrap();
    let file = dir.join(hypertensor_chain::store::DATABASE_FILE);
    let good = std::fs::read(&file).unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        ("foreign", b"{\"not\": \"a database\"}".to_vec()),
        ("damaged", {
            let mut bytes = good.clone();
            for b in bytes.iter_mut().skip(4096) {
                *b ^= 0x5A;
            }
            bytes
        }),
    ];
    for (name, bytes) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let err = Node::start(config(dir.clone(), 50)).await.unwrap_err();
        let text = err.to_string();
        let NodeError::BadDatabase { path, problem } = err else {
            panic!("{name}: {text}")
        };
        assert!(path.ends_with("chain.redb"), "{name}: {path}");
        let expected = match name {
            "empty" => matches!(problem, DatabaseProblem::Empty),
            "foreign" => matches!(problem, DatabaseProblem::Foreign(_)),
            _ => matches!(problem, DatabaseProblem::Damaged(_)),
        };
        assert!(expected, "{name}: {text}");
        assert!(!text.contains("invalid configuration"), "{text}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            bytes,
            "{name}: the file is left as it was"
        );
    }
    // The good file still opens, with its blocks.
    std::fs::write(&file, &good).unwrap();
    let (node, client) = start(config(dir.clone(), 50)).await;
    assert!(client.header(None).await.unwrap().unwrap().header.height > 0);
    drop(client);
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
