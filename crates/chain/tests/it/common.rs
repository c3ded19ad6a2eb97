//! Starting nodes and speaking raw HTTP to them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hypertensor_chain::{ChainConfig, Node};
use hypertensor_chain_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fresh directory for a test's database.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hypertensor-chain-it-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Dev config on an ephemeral port with `block_ms` blocks.
pub(crate) fn config(dir: PathBuf, block_ms: u64) -> ChainConfig {
    let mut config = ChainConfig::dev(dir, "127.0.0.1:0".parse().unwrap());
    config.block_time = Some(Duration::from_millis(block_ms));
    config
}

/// Starts a node and connects a client.
pub(crate) async fn start(config: ChainConfig) -> (Node, Client) {
    let node = Node::start(config).await.unwrap();
    let client = Client::connect(&format!("ws://{}", node.rpc_addr()))
        .await
        .unwrap();
    (node, client)
}

/// One HTTP/1.1 POST of `body` to `/`; returns (status, body).
pub(crate) async fn post(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // The server may answer (413) before reading all of a large body.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// POSTs a JSON-RPC text and returns the parsed JSON answer.
pub(crate) async fn rpc(addr: SocketAddr, body: &str) -> serde_json::Value {
    let (_, text) = post(addr, body.as_bytes()).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer {text:?} is not JSON: {e}"))
}

/// The error code of a JSON-RPC answer.
pub(crate) fn code(answer: &serde_json::Value) -> i64 {
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {answer}"))
}
