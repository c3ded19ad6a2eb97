//! `hypertensor serve` as a user runs it: the plainest command serves the
//! official client's plainest call; sixteen concurrent greedy requests get
//! exactly the answers each gets alone; a full server answers at once, in
//! OpenAI's error shape, with the reason.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Starts `hypertensor serve ARGS` and returns it with its API address.
pub(crate) fn serve(args: &[&str]) -> (Child, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let lines = crate::process::stdout_lines(&mut child);
    let line = lines
        .recv_timeout(Duration::from_secs(120))
        .expect("serve prints its address");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split("/v1").next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr, lines)
}

pub(crate) fn stop(mut child: Child) {
    // SIGTERM, as a service manager stops it: a clean exit.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
}

fn chat(addr: &str, question: &str, max_tokens: usize) -> (u16, serde_json::Value) {
    let body = serde_json::json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
    .to_string();
    let (status, body) = crate::http::post_json(addr, "/v1/chat/completions", &body);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

fn content(reply: &serde_json::Value) -> String {
    reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {reply}"))
        .to_string()
}

#[test]
fn serve_with_no_flags_answers_the_official_clients_plainest_call() {
    // The command exactly as the README gives it: the default model and
    // address (127.0.0.1:8080).
    assert!(
        std::net::TcpListener::bind("127.0.0.1:8080").is_ok(),
        "port 8080 is taken on this machine; `serve` with no flags needs it"
    );
    let (child, addr, _) = serve(&[]);
    assert_eq!(addr, "127.0.0.1:8080");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(crate::python_env::run_openai_client(vec![
            "--plainest-url".into(),
            format!("http://{addr}/v1"),
        ]));
    // The dashboard and the operator's endpoints, on the same address.
    let (status, page) = crate::http::get(&addr, "/");
    assert_eq!(status, 200);
    assert!(page.contains("/app.js"), "{page}");
    assert_eq!(crate::http::get(&addr, "/health").0, 200);
    assert_eq!(crate::http::get(&addr, "/ready").0, 200);
    let (status, metrics) = crate::http::get(&addr, "/metrics");
    assert_eq!(status, 200);
    let tokens = metrics
        .lines()
        .find_map(|l| l.strip_prefix("inference_server_tokens_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no token counter in {metrics}"));
    assert!(tokens > 0.0, "the chat's tokens ran in batches: {metrics}");
    assert!(
        metrics.contains("inference_server_batch_rows_count"),
        "{metrics}"
    );
    stop(child);
}

#[test]
fn sixteen_concurrent_greedy_requests_get_their_solo_answers() {
    let (child, addr, _) = serve(&["--addr", "127.0.0.1:0"]);
    let questions: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "Name {} things a {} can do.",
                i % 5 + 2,
                ["cat", "river", "teacher", "robot"][i % 4]
            )
        })
        .collect();
    let solo: Vec<String> = questions
        .iter()
        .map(|q| {
            let (status, reply) = chat(&addr, q, 32);
            assert_eq!(status, 200, "{reply}");
            content(&reply)
        })
        .collect();
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| {
                let addr = addr.clone();
                scope.spawn(move || {
                    let (status, reply) = chat(&addr, q, 32);
                    assert_eq!(status, 200, "{reply}");
                    content(&reply)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in solo.iter().zip(&together).enumerate() {
        assert_eq!(
            a, b,
            "request {i}'s answer changed when served among others"
        );
    }
    stop(child);
}

#[test]
fn a_full_server_refuses_at_once_with_the_reason() {
    // Two megabytes of cache hold 45 positions of the default model: a
    // prompt longer than that cannot be taken.
    let (child, addr, _) = serve(&["--addr", "127.0.0.1:0", "--cache-mb", "2"]);
    let started = std::time::Instant::now();
    let (status, reply) = chat(
        &addr,
        &"Tell me about the history of bridges. ".repeat(6),
        8,
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the refusal waited"
    );
    assert_eq!(status, 503, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("the server is full"), "{message}");
    assert!(message.contains("45 are free"), "{message}");
    assert_eq!(reply["error"]["code"], "server_full", "{reply}");
    // A request that fits is served.
    let (status, reply) = chat(&addr, "Hi", 4);
    assert_eq!(status, 200, "{reply}");
    stop(child);

    // One generation at a time and none waiting: a second request made
    // while the first runs is answered 429 at once.
    let (child, addr, _) = serve(&[
        "--addr",
        "127.0.0.1:0",
        "--parallel",
        "1",
        "--api-max-waiting",
        "0",
    ]);
    let long = {
        let addr = addr.clone();
        std::thread::spawn(move || chat(&addr, "Write a long story about a lighthouse.", 400))
    };
    // Until the long one holds the only slot, a short one may get it.
    let mut refused = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        let started = std::time::Instant::now();
        let (status, reply) = chat(&addr, "Hi", 1);
        if status == 429 {
            refused = Some((started.elapsed(), reply));
            break;
        }
    }
    let (took, reply) = refused.expect("a second request while the first runs is refused");
    assert!(took < Duration::from_secs(1), "the refusal took {took:?}");
    assert_eq!(reply["error"]["type"], "rate_limit_error", "{reply}");
    assert!(
        !reply["error"]["message"].as_str().unwrap().is_empty(),
        "{reply}"
    );
    let (status, _) = long.join().unwrap();
    assert_eq!(status, 200);
    stop(child);
}
