//! The node as a service: subscriptions, batches, every query method,
//! restart on the same database, and the pool's ordering over the wire.

use std::time::Duration;

use hypertensor_chain::{Error, Node};
use hypertensor_chain_client::BlockId;
use hypertensor_primitives::{Keypair, TENSOR};
use hypertensor_runtime::{Call, Extrinsic, NodeClass};

use crate::common::{config, rpc, start, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_heads_arrive_in_order_and_match_stored_blocks() {
    let dir = temp_dir("heads");
    let (node, client) = start(config(dir.clone(), 100)).await;
    let mut heads = client.subscribe_new_heads().await.unwrap();
    let mut last = None;
    for _ in 0..5 {
        let head = heads.next().await.unwrap().unwrap();
        if let Some(prev) = last {
            assert_eq!(head.header.height, prev + 1);
        }
        last = Some(head.header.height);
        let stored = client
            .header(Some(BlockId::Height(head.header.height)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, head);
        let by_hash = client
            .block(Some(BlockId::Hash(head.hash)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_hash.block.header, head.header);
        assert!(
            client
                .events(Some(BlockId::Hash(head.hash)))
                .await
                .unwrap()
                .is_some()
        );
    }
    assert_eq!(
        client
            .header(Some(BlockId::Height(1_000_000)))
            .await
            .unwrap(),
        None
    );
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_nonces_wait_in_the_pool_and_go_in_once_the_gap_is_filled() {
    let dir = temp_dir("future");
    let (node, client) = start(config(dir.clone(), 100)).await;
    let genesis = node.genesis_hash();
    let dave = Keypair::dev("dave");
    let to = Keypair::dev("eve").account_id();
    let xt = |n| Extrinsic::sign(&dave, n, Call::Transfer { to, amount: TENSOR }, &genesis);
    for n in [2, 1] {
        let r = client.submit_extrinsic(&xt(n)).await.unwrap();
        assert!(!r.ready);
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let account = client.account(&dave.account_id()).await.unwrap();
    assert_eq!(
        (account.nonce, account.next_nonce),
        (0, 0),
        "held: nonce 0 missing"
    );
    assert_eq!(client.health().await.unwrap().pending_extrinsics, 2);
    let included = client
        .submit_and_watch(&xt(0), Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let account = client.account(&dave.account_id()).await.unwrap();
    assert_eq!(
        account.nonce, 3,
        "all three applied (block {})",
        included.height
    );
    assert_eq!(client.health().await.unwrap().pending_extrinsics, 0);
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_over_http_batches_and_websocket() {
    let dir = temp_dir("queries");
    let (node, client) = start(config(dir.clone(), 100)).await;
    let addr = node.rpc_addr();
    let batch = "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"system_health\"},\
                 {\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"nope\"},\
                 {\"jsonrpc\":\"2.0\",\"method\":\"system_health\"}]";
    let a = rpc(addr, batch).await;
    let answers = a.as_array().unwrap();
    assert_eq!(answers.len(), 2, "the notification gets no answer");
    assert!(answers[0]["result"]["height"].is_u64());
    assert_eq!(answers[1]["error"]["code"], -32601);
    let params = client.parameters().await.unwrap();
    assert_eq!(params, hypertensor_runtime::Params::devnet());
    let epoch = client.epoch_info().await.unwrap();
    assert_eq!(epoch.epoch_length, params.epoch_length);
    assert_eq!(client.subnet(1).await.unwrap(), None);
    assert!(client.subnet_nodes(1).await.unwrap().is_empty());
    let peer = Keypair::dev("x").peer_id();
    assert!(
        !client
            .proof_of_stake(1, &peer, NodeClass::Idle)
            .await
            .unwrap()
    );
    assert_eq!(client.elected_validator(1, None).await.unwrap(), None);
    assert_eq!(client.consensus_data(1, Some(0)).await.unwrap(), None);
    // Large balances (above 2^64) cross the wire exactly.
    let alice = client
        .account(&Keypair::dev("alice").account_id())
        .await
        .unwrap();
    assert!(alice.free >= 1_000_000 * TENSOR);
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_continues_from_its_database_and_refuses_another_genesis() {
    let dir = temp_dir("restart");
    let (node, client) = start(config(dir.clone(), 80)).await;
    let genesis = node.genesis_hash();
    let alice = Keypair::dev("alice");
    let to = Keypair::dev("bob").account_id();
    let xt = Extrinsic::sign(
        &alice,
        0,
        Call::Transfer {
            to,
            amount: 3 * TENSOR,
        },
        &genesis,
    );
    client
        .submit_and_watch(&xt, Duration::from_secs(10))
        .await
        .unwrap();
    drop(client);
    node.stop().await.unwrap();
    let (node, client) = start(config(dir.clone(), 80)).await;
    let best = client.header(None).await.unwrap().unwrap();
    let health = client.health().await.unwrap();
    assert_eq!(health.genesis_hash, genesis);
    assert_eq!(client.account(&alice.account_id()).await.unwrap().nonce, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.health().await.unwrap().height > best.header.height);
    drop(client);
    node.stop().await.unwrap();
    let mut other = config(dir.clone(), 80);
    other.genesis.timestamp_ms = 1;
    let err = Node::start(other).await.unwrap_err();
    assert!(matches!(err, Error::GenesisMismatch { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
