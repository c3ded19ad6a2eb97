//! `hypertensor devnet` as a newcomer runs it: from an empty directory it
//! serves a chat completion within its first epoch, answers the official
//! openai client's plainest call, shows each epoch's status, and stops
//! cleanly on Ctrl-C.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chat(addr: &str) -> (u16, String) {
    let body = r#"{"model": "smollm2", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16, "temperature": 0}"#;
    crate::http::post_json(addr, "/v1/chat/completions", body)
}

#[test]
fn devnet_serves_a_chat_completion_within_its_first_epoch_and_stops_on_ctrl_c() {
    let dir = std::env::temp_dir().join(format!("hypertensor-cli-devnet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    // The README's command with its defaults (20-block epochs of 1 s
    // blocks), on a fresh directory and a free API port.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .arg("devnet")
        .arg("--dir")
        .arg(&dir)
        .args(["--api-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let lines = crate::process::stdout_lines(&mut child);
    let wait_for = |needle: &str| -> (String, Vec<String>) {
        let mut seen = Vec::new();
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(90))
                .unwrap_or_else(|_| panic!("no line containing {needle:?} after {seen:#?}"));
            seen.push(line.clone());
            if line.contains(needle) {
                return (line, seen);
            }
        }
    };
    let (api, _) = wait_for("OpenAI-compatible API: http://");
    let addr = api
        .trim_start_matches("OpenAI-compatible API: http://")
        .trim_end_matches("/v1")
        .to_string();
    let (curl, _) = wait_for("try: curl ");
    assert!(curl.contains(&addr), "{curl}");

    // Hosters announce themselves within a second or two of starting.
    let mut answer = chat(&addr);
    while answer.0 != 200 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(250));
        answer = chat(&addr);
    }
    let elapsed = started.elapsed();
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert!(
        elapsed < Duration::from_secs(20),
        "the first chat completion took {elapsed:?}, longer than the first epoch"
    );
    let reply: serde_json::Value = serde_json::from_str(&answer.1).unwrap();
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty(), "{reply}");
    let tokens = reply["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=16).contains(&tokens), "{reply}");

    // The official openai client's plainest call (no max_tokens, no
    // temperature) three times in a row, then a normal call: admission
    // fits each to what the hosters hold and bans no one.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(crate::python_env::run_openai_client(vec![
            "--plainest-url".into(),
            format!("http://{addr}/v1"),
        ]));

    // The first epoch's status, with every node in it.
    wait_for("epoch   0 |");
    let (status, rows) = wait_for("hoster-8");
    assert!(status.contains("node 11"), "{status}");
    assert_eq!(rows.len(), 11, "one row per node: {rows:#?}");
    assert!(rows[1].trim_start().starts_with("validator-1"), "{rows:#?}");

    // Ctrl-C: a clean stop.
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    wait_for("stopped");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the devnet did not exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
