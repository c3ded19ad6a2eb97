//! Admission, not bans: a request larger than the swarm's free cache is
//! fitted to it, a prompt no route can hold is a 503 that bans no one, and
//! clients that go away free every server's cache. Over real sockets, the
//! real P2P layer and the real model, through the HTTP API.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::harness::{self, MODEL, ServerNode, Swarm, serve_api};
use crate::python_env::run_openai_client;

async fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let (status, text) = harness::post(addr, path, &body.to_string()).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, value)
}

/// Two servers of half the model each, each with room for `tokens`.
async fn small_swarm(name: &str, tokens: usize) -> (Swarm, Vec<ServerNode>) {
    let swarm = Swarm::new(name).await;
    let mut servers = Vec::new();
    for range in [0..15, 15..30] {
        let per_token = harness::span(range.clone()).cache_bytes_per_token();
        servers.push(
            swarm
                .add_server(range, |c| c.cache_budget_bytes = tokens * per_token)
                .await,
        );
    }
    (swarm, servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_free_cache_are_fitted_and_ban_no_one() {
    const ROOM: usize = 256;
    let (_swarm, servers) = small_swarm("fit", ROOM).await;
    let client = _swarm.client(|_| {}).await;
    let addr = serve_api(client.clone()).await;

    // The official client's plainest call (no max_tokens, no temperature)
    // three times, then a normal call: each is served.
    run_openai_client(vec!["--plainest-url".into(), format!("http://{addr}/v1")]).await;
    // Their sessions close a moment after the answers, and the servers
    // announce their room again as they do.
    let start = Instant::now();
    while client
        .servers(0)
        .await
        .unwrap()
        .iter()
        .any(|(_, info)| info.free_cache_tokens < ROOM as u64)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "room never announced free"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An explicit max_tokens within the model's context but beyond what
    // any route holds is fitted to the route: it ends with `length` at
    // the servers' room.
    let (status, v) = post(
        addr,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 4000, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["total_tokens"], ROOM, "{v}");

    // A prompt longer than any route can hold is a 503 that says so.
    let long = "one two three four five six seven eight ".repeat(40);
    let (status, v) = post(
        addr,
        "/v1/completions",
        json!({"model": MODEL, "prompt": long, "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("room"), "{message}");

    // Beyond the model's context is the caller's fault, named.
    let (status, v) = post(
        addr,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
               "max_tokens": 9000}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "max_tokens", "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");

    // None of it was a fault: no server was banned, and a normal request
    // is served at once.
    let stats = client.stats();
    assert_eq!(stats.bans, 0, "{stats:?}");
    for s in &servers {
        assert_eq!(client.strikes(&s.peer), 0);
    }
    let (status, v) = post(
        addr,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Hello"}],
               "max_tokens": 8, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_without_max_tokens_runs_to_the_room_that_fits_and_ends_with_length() {
    // Room for the chat template, the question and a few dozen tokens:
    // the story asked for cannot end inside it.
    const ROOM: usize = 96;
    let (swarm, servers) = small_swarm("unbounded", ROOM).await;
    let client = swarm.client(|_| {}).await;
    let addr = serve_api(client.clone()).await;
    for _ in 0..2 {
        let (status, v) = post(
            addr,
            "/v1/chat/completions",
            json!({"model": MODEL, "temperature": 0, "messages": [{"role": "user",
                   "content": "Tell me a long story about a dragon and a knight."}]}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
        assert_eq!(v["usage"]["total_tokens"], ROOM, "{v}");
        let generated = v["usage"]["completion_tokens"].as_u64().unwrap();
        assert!(generated > 8, "{v}");
    }
    // Fitting is not a fault: no strike against any server.
    assert_eq!(client.stats().bans, 0);
    for s in &servers {
        assert_eq!(client.strikes(&s.peer), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_free_every_servers_cache_at_once() {
    let swarm = Swarm::new("abandon").await;
    let mut servers = Vec::new();
    for range in [0..15, 15..30] {
        servers.push(swarm.add_server(range, |_| {}).await);
    }
    let full: Vec<u64> = servers
        .iter()
        .map(|s| s.server.free_cache_tokens())
        .collect();
    let client = swarm.client(|_| {}).await;
    let addr = serve_api(client).await;

    // Eight non-streamed requests for long generations, whose clients hang
    // up after half a second.
    let body = json!({"model": MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 2000,
                      "temperature": 0})
    .to_string();
    let mut sockets = Vec::new();
    for _ in 0..8 {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        servers.iter().any(|s| s.server.active_sessions() > 0),
        "the requests were being served"
    );
    let gone = Instant::now();
    drop(sockets);

    // Within seconds every server holds no session and its whole budget.
    loop {
        let idle = servers
            .iter()
            .zip(&full)
            .all(|(s, f)| s.server.active_sessions() == 0 && s.server.free_cache_tokens() == *f);
        if idle {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "caches still held {:?} after the clients left",
            gone.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fresh request is served promptly.
    let started = Instant::now();
    let (status, v) = post(
        addr,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_claims_room_it_never_grants_cannot_stall_a_request() {
    let swarm = Swarm::new("liar").await;
    // Announced as the fastest and roomiest, it answers every opening
    // "full, with room for u64::MAX tokens".
    let liar = swarm
        .add_refusing_server(
            0..30,
            hypertensor_inference::wire::Refusal::Full {
                free_tokens: u64::MAX,
            },
        )
        .await;
    swarm.add_server(0..30, |_| {}).await;
    let client = swarm.client(|_| {}).await;
    let addr = serve_api(client.clone()).await;
    let started = Instant::now();
    let (status, v) = tokio::time::timeout(
        Duration::from_secs(30),
        post(
            addr,
            "/v1/completions",
            json!({"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}),
        ),
    )
    .await
    .expect("the request is not stalled by the liar");
    assert_eq!(status, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Busy is not a fault: the liar is refused around, not banned.
    assert_eq!(client.strikes(&liar), 0);
    assert!(client.stats().refusals >= 1, "{:?}", client.stats());
}
