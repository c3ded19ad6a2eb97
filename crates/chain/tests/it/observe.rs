//! `/health`, `/ready` and Prometheus `/metrics` on the chain's RPC port.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{config, rpc, start, temp_dir};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// The value of the first sample whose line starts with `prefix `.
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(prefix)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpc_port_answers_health_readiness_and_metrics_that_move() {
    let (node, _client) = start(config(temp_dir("observe"), 100)).await;
    let addr = node.rpc_addr();
    assert_eq!(
        get(addr, "/health").await,
        (200, r#"{"status":"ok"}"#.into())
    );
    assert_eq!(
        get(addr, "/ready").await,
        (200, r#"{"status":"ready"}"#.into())
    );
    let (status, before) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let answer = rpc(
        addr,
        r#"{"jsonrpc":"2.0","id":1,"method":"chain_getHeader","params":[]}"#,
    )
    .await;
    assert!(answer.get("result").is_some(), "{answer}");
    let _ = rpc(
        addr,
        r#"{"jsonrpc":"2.0","id":2,"method":"no_such_method","params":[]}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, after) = get(addr, "/metrics").await;
    assert!(
        value(&after, "chain_height") > value(&before, "chain_height"),
        "{after}"
    );
    assert!(value(&after, "chain_block_import_seconds_count") >= 1.0);
    assert_eq!(value(&after, "chain_finality_lag_blocks"), 0.0);
    assert_eq!(value(&after, "chain_pool_size"), 0.0);
    assert_eq!(
        value(
            &after,
            r#"chain_rpc_request_seconds_count{method="chain_getHeader"}"#
        ),
        1.0
    );
    // A caller's unknown method names no label of its own.
    assert_eq!(
        value(
            &after,
            r#"chain_rpc_request_seconds_count{method="unknown"}"#
        ),
        1.0
    );
    assert!(!after.contains("no_such_method"));
    node.stop().await.unwrap();
}
