//! What no single client may do to the API: hold sockets with half a
//! request, send endless or huge bodies, open every connection, flood the
//! queue, or leave a generation running after it went away. Each test
//! reproduces the attack over real sockets and checks that an honest
//! client is still served.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hypertensor_api::{ApiConfig, Backend, BackendError};
use hypertensor_model::{ChatTemplate, Flow, Generation, GenerationRequest, Tokenizer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::http::{get, post};
use crate::{MODEL, backend, start_with};

/// A short healthy request that must keep working.
async fn honest_request(addr: SocketAddr) {
    let (status, body) = post(
        addr,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "Hello", "max_tokens": 2, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "an honest client is served: {body}");
}

/// Reads until the server closes the socket (or `limit` passes), returning
/// what it sent and how long it took.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server did not close the socket within {limit:?}"
    );
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

fn status_and_body(raw: &str) -> (u16, Value) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).expect("a JSON body"))
}

fn assert_openai_error(body: &Value) {
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_in_openai_shape() {
    let addr = start_with(backend(), ApiConfig::default()).await;
    let (status, body) = get(addr, "/v1/nothing-here").await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_openai_error(&v);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/nothing-here")
    );
    let (status, body) = get(addr, "/v1/completions").await;
    assert_eq!(status, 405);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_openai_error(&v);
    assert!(v["error"]["message"].as_str().unwrap().contains("GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_beyond_the_limit_is_refused_at_once() {
    let config = ApiConfig {
        max_body_bytes: 4096,
        ..ApiConfig::default()
    };
    let addr = start_with(backend(), config).await;
    // Declares 1 GB and sends none of it: answered without waiting.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000000000\r\n\r\n",
        )
        .await
        .unwrap();
    let (raw, took) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let (status, body) = status_and_body(&raw);
    assert_eq!(status, 413, "{raw}");
    assert_openai_error(&body);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // A chunked body that grows past the limit is cut off too.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
    stream
        .write_all(
            format!(
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (raw, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status_and_body(&raw).0, 413, "{raw}");
    honest_request(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_is_closed_after_the_head_timeout() {
    let config = ApiConfig {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        ..ApiConfig::default()
    };
    let addr = start_with(backend(), config).await;
    // Half a head, then silence.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
        .await
        .unwrap();
    let (_, took) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // A connection that never sends anything is closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    read_until_closed(&mut idle, Duration::from_secs(5)).await;
    // A whole head, then half the declared body: 408.
    let mut slow_body = TcpStream::connect(addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
    let (raw, _) = read_until_closed(&mut slow_body, Duration::from_secs(5)).await;
    let (status, body) = status_and_body(&raw);
    assert_eq!(status, 408, "{raw}");
    assert_openai_error(&body);
    honest_request(addr).await;
}

/// A connection from `local` (a loopback address of its own) to `addr`.
async fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// What the server answers a request on a new connection from `local`
/// that it refuses: the status and the JSON body, checked to be in
/// OpenAI's error shape.
async fn refused_answer(local: &str, addr: SocketAddr) -> (u16, Value) {
    let mut refused = connect_from(local, addr).await;
    refused
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (raw, _) = read_until_closed(&mut refused, Duration::from_secs(5)).await;
    let (status, body) = status_and_body(&raw);
    assert_openai_error(&body);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let config = ApiConfig {
        max_connections_per_address: 8,
        ..ApiConfig::default()
    };
    let addr = start_with(backend(), config).await;
    // One address opens its 8 and keeps them idle...
    let mut hogs = Vec::new();
    for _ in 0..8 {
        hogs.push(connect_from("127.0.0.2", addr).await);
    }
    // ...and its 9th is refused with a 429 in OpenAI's shape, at once.
    let (status, body) = refused_answer("127.0.0.2", addr).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.2"),
        "{body}"
    );
    // Every other address is still served.
    honest_request(addr).await;
    // Once the hogs close, their address is served again.
    drop(hogs);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from("127.0.0.2", addr).await;
    again
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (raw, _) = read_until_closed(&mut again, Duration::from_secs(5)).await;
    assert_eq!(status_and_body(&raw).0, 200, "{raw}");
}

/// The local model, recording each generation's outcome and when it ended.
struct Recording {
    inner: Arc<dyn Backend>,
    started: AtomicUsize,
    ended: Mutex<Vec<(Instant, Generation)>>,
}

impl Backend for Recording {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn tokenizer(&self) -> &Tokenizer {
        self.inner.tokenizer()
    }
    fn chat_template(&self) -> Option<&ChatTemplate> {
        self.inner.chat_template()
    }
    fn context_length(&self) -> usize {
        self.inner.context_length()
    }
    fn block_count(&self) -> usize {
        self.inner.block_count()
    }
    fn generate(
        &self,
        request: &GenerationRequest,
        tuning: Option<&hypertensor_model::PromptTuning>,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, BackendError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let outcome = self.inner.generate(request, tuning, on_text);
        if let Ok(g) = &outcome {
            self.ended.lock().unwrap().push((Instant::now(), g.clone()));
        }
        outcome
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_its_generation() {
    let recording = Arc::new(Recording {
        inner: backend(),
        started: AtomicUsize::new(0),
        ended: Mutex::new(Vec::new()),
    });
    let addr = start_with(recording.clone(), ApiConfig::default()).await;
    for stream in [false, true] {
        let body = json!({"model": MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 4000,
                          "temperature": 0, "stream": stream})
        .to_string();
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket
            .write_all(
                format!(
                    "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // Let it generate a little, then hang up.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let gone = Instant::now();
        drop(socket);
        let deadline = gone + Duration::from_secs(5);
        let (ended, generation) = loop {
            if let Some(last) = recording.ended.lock().unwrap().last().cloned()
                && last.0 >= gone
            {
                break last;
            }
            assert!(
                Instant::now() < deadline,
                "the generation (stream: {stream}) still runs 5 s after its client left"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            generation.tokens.len() < 1000,
            "stopped early, after {} tokens",
            generation.tokens.len()
        );
        assert!(
            ended - gone < Duration::from_secs(1),
            "stopped {:?} after the client left",
            ended - gone
        );
    }
    assert_eq!(recording.started.load(Ordering::SeqCst), 2);
    honest_request(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_the_rest_are_served() {
    let config = ApiConfig {
        max_concurrent: 1,
        max_waiting: 1,
        ..ApiConfig::default()
    };
    let addr = start_with(backend(), config).await;
    let long = json!({"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 48, "temperature": 0});
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let body = long.clone();
            tokio::spawn(async move { post(addr, "/v1/completions", &body).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == 429 {
            assert_openai_error(&serde_json::from_str(&body).unwrap());
        }
        statuses.push(status);
    }
    statuses.sort();
    // One runs, one waits, the others are told to come back.
    assert_eq!(statuses, vec![200, 200, 429, 429], "{statuses:?}");
    honest_request(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_answers_503_in_openai_shape_and_recovers() {
    let config = ApiConfig {
        max_connections: 4,
        ..ApiConfig::default()
    };
    let addr = start_with(backend(), config).await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(connect_from(&format!("127.0.0.{}", 10 + i), addr).await);
    }
    let (status, body) = refused_answer("127.0.0.20", addr).await;
    assert_eq!(status, 503, "{body}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    honest_request(addr).await;
}
