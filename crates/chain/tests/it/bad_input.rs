//! Bad input over the wire: each answered with a JSON-RPC error naming
//! what was wrong, and the node healthy with its state unchanged.

use hypertensor_chain_client::api::codes;
use hypertensor_chain_client::{AccountInfo, Client, Error};
use hypertensor_primitives::{H256, Keypair, TENSOR};
use hypertensor_runtime::{Call, Extrinsic};

use crate::common::{code, config, post, rpc, start, temp_dir};

/// What must not change: the signer's account, the pool, health.
async fn snapshot(client: &Client, who: &Keypair) -> (AccountInfo, u64) {
    let account = client.account(&who.account_id()).await.unwrap();
    let health = client.health().await.unwrap();
    (account, health.pending_extrinsics)
}

fn rpc_code(result: Result<impl std::fmt::Debug, Error>) -> (i64, String) {
    match result {
        Err(Error::Rpc(e)) => (e.code, e.message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_gets_a_json_rpc_error_and_changes_nothing() {
    let dir = temp_dir("bad-input");
    let mut cfg = config(dir.clone(), 150);
    cfg.rpc.max_request_bytes = 8 * 1024;
    let (node, client) = start(cfg).await;
    let addr = node.rpc_addr();
    let genesis = node.genesis_hash();
    let bob = Keypair::dev("bob");
    let to = Keypair::dev("charlie").account_id();
    let transfer =
        |nonce, amount| Extrinsic::sign(&bob, nonce, Call::Transfer { to, amount }, &genesis);
    // One good extrinsic first, so there is a used nonce to replay.
    let included = client
        .submit_and_watch(&transfer(0, TENSOR), std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert!(included.failure().is_none());
    let before = snapshot(&client, &bob).await;
    assert_eq!(before.0.nonce, 1);

    // Protocol level, over HTTP.
    let a = rpc(addr, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":").await;
    assert_eq!(code(&a), codes::PARSE_ERROR);
    let a = rpc(
        addr,
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"chain_getEverything\",\"params\":[]}",
    )
    .await;
    assert_eq!(code(&a), codes::METHOD_NOT_FOUND);
    assert!(
        a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chain_getEverything")
    );
    assert_eq!(a["id"], 2);
    let a = rpc(
        addr,
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"network_getSubnet\",\"params\":[\"one\"]}",
    )
    .await;
    assert_eq!(code(&a), codes::INVALID_PARAMS);
    assert!(
        a["error"]["message"].as_str().unwrap().contains("subnet"),
        "{a}"
    );
    let a = rpc(
        addr,
        "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"state_getAccount\",\"params\":[42]}",
    )
    .await;
    assert_eq!(code(&a), codes::INVALID_PARAMS);
    let a = rpc(addr, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"author_submitExtrinsic\",\"params\":[{\"signer\":1}]}").await;
    assert_eq!(code(&a), codes::INVALID_PARAMS);
    let a = rpc(addr, "{\"id\":6,\"method\":\"system_health\"}").await;
    assert_eq!(code(&a), codes::INVALID_REQUEST, "jsonrpc 2.0 required");
    let a = rpc(addr, "[]").await;
    assert_eq!(code(&a), codes::INVALID_REQUEST);
    let a = rpc(
        addr,
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"chain_subscribeNewHeads\"}",
    )
    .await;
    assert_eq!(code(&a), codes::SUBSCRIPTION_NEEDS_WEBSOCKET);
    // Oversized request.
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"system_health\",\"params\":[\"{}\"]}}",
        "x".repeat(32 * 1024)
    );
    let (status, body) = post(addr, big.as_bytes()).await;
    assert_eq!(status, 413);
    let a: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code(&a), codes::REQUEST_TOO_LARGE);

    // Extrinsics, over the WebSocket client.
    let mut bad_sig = transfer(1, TENSOR);
    bad_sig.signature.0[0] ^= 1;
    let (c, m) = rpc_code(client.submit_extrinsic(&bad_sig).await);
    assert_eq!(c, codes::BAD_SIGNATURE, "{m}");
    let other_network = Extrinsic::sign(
        &bob,
        1,
        Call::Transfer { to, amount: TENSOR },
        &H256([7; 32]),
    );
    let (c, _) = rpc_code(client.submit_extrinsic(&other_network).await);
    assert_eq!(c, codes::BAD_SIGNATURE, "signed for another genesis hash");
    let err = client
        .submit_extrinsic(&transfer(0, TENSOR))
        .await
        .unwrap_err();
    let Error::Rpc(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, codes::STALE_NONCE, "replayed nonce: {}", e.message);
    assert_eq!(
        e.runtime_error(),
        Some(hypertensor_runtime::Error::StaleNonce {
            expected: 1,
            got: 0
        })
    );
    let (c, _) = rpc_code(client.submit_extrinsic(&transfer(1 + 65, TENSOR)).await);
    assert_eq!(c, codes::FUTURE_NONCE);
    let (c, m) = rpc_code(
        client
            .submit_extrinsic(&transfer(1, 5_000_000 * TENSOR))
            .await,
    );
    assert_eq!(c, codes::INSUFFICIENT_BALANCE, "{m}");
    let (c, _) = rpc_code(client.submit_extrinsic(&transfer(1, 0)).await);
    assert_eq!(
        c,
        codes::INVALID_CALL,
        "zero amount fails the stateless checks"
    );
    let poor = Keypair::dev("nobody-has-funds");
    let xt = Extrinsic::sign(&poor, 0, Call::Transfer { to, amount: 1 }, &genesis);
    let (c, _) = rpc_code(client.submit_extrinsic(&xt).await);
    assert_eq!(c, codes::CANNOT_PAY_FEE);

    // Healthy, still producing, nothing changed for bob, nothing pending.
    let h1 = client.health().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let h2 = client.health().await.unwrap();
    assert!(h2.height > h1.height, "production goes on");
    assert_eq!(snapshot(&client, &bob).await, before);
    let totals = client.totals().await.unwrap();
    assert_eq!(totals.accounted(), Some(totals.issuance));
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_rate_limit_are_refused_then_served_again() {
    let dir = temp_dir("rate");
    let mut cfg = config(dir.clone(), 1000);
    cfg.rpc.requests_per_second = 5;
    cfg.rpc.burst = 5;
    let node = hypertensor_chain::Node::start(cfg).await.unwrap();
    let addr = node.rpc_addr();
    let health = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"system_health\"}";
    for _ in 0..5 {
        let a = rpc(addr, health).await;
        assert!(a["result"]["height"].is_u64(), "{a}");
    }
    let (status, body) = post(addr, health.as_bytes()).await;
    assert_eq!(status, 429);
    let a: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code(&a), codes::RATE_LIMITED);
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    let a = rpc(addr, health).await;
    assert!(
        a["result"]["height"].is_u64(),
        "served again after refill: {a}"
    );
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_websocket_messages_get_errors_and_an_oversized_one_closes_only_its_connection() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let dir = temp_dir("ws-bad");
    let mut cfg = config(dir.clone(), 150);
    cfg.rpc.max_request_bytes = 4096;
    let (node, client) = start(cfg).await;
    let url = format!("ws://{}", node.rpc_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let mut ask = async |text: &str| -> serde_json::Value {
        ws.send(Message::text(text)).await.unwrap();
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                _ => continue,
            }
        }
    };
    assert_eq!(code(&ask("{nope").await), codes::PARSE_ERROR);
    assert_eq!(
        code(&ask("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}").await),
        codes::METHOD_NOT_FOUND
    );
    assert_eq!(
        code(
            &ask("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"chain_getBlock\",\"params\":[true]}")
                .await
        ),
        codes::INVALID_PARAMS
    );
    let a = ask("{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"method\":\"chain_subscribeNewHeads\"}").await;
    assert!(a["result"].is_u64(), "{a}");
    // Too large: the connection is closed by the WebSocket layer.
    let big = format!("{{\"x\":\"{}\"}}", "y".repeat(8192));
    let _ = ws.send(Message::text(big)).await;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true));
    // Other connections are unaffected.
    assert!(client.health().await.is_ok());
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
