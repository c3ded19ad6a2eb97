//! `node --role hoster|client`: two hoster processes and a client process
//! on loopback serve the OpenAI API with the local model's greedy tokens.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::Running as Node;

/// `hypertensor node` on loopback with `args`.
fn start(args: &[&str]) -> Node {
    let child = Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .arg("node")
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    Node::new(child)
}

fn post(addr: &str, body: &str) -> (u16, String) {
    crate::http::post_json(addr, "/v1/completions", body)
}

#[test]
fn two_hosters_and_a_client_serve_the_api_with_the_local_models_tokens() {
    let first = start(&["--role", "hoster", "--blocks", "0:15"]);
    let listen = first.wait_for("listening on ");
    let boot = listen
        .trim_start_matches("listening on ")
        .trim()
        .to_string();
    first.wait_for("serving blocks 0..15");
    // A gateway with half the model covered is up but not ready.
    let client = start(&[
        "--role",
        "client",
        "--bootstrap",
        &boot,
        "--api",
        "127.0.0.1:0",
    ]);
    let api = client.wait_for("OpenAI-compatible API on http://");
    let addr = api
        .trim_start_matches("OpenAI-compatible API on http://")
        .trim_end_matches("/v1")
        .to_string();
    let (status, reason) = crate::http::get(&addr, "/ready");
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("no server covers"), "{reason}");
    // Without --blocks the second hoster takes the uncovered half.
    let second = start(&[
        "--role",
        "hoster",
        "--num-blocks",
        "15",
        "--bootstrap",
        &boot,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    second.wait_for("serving blocks 15..30");
    let metrics = second.wait_for("metrics on http://");
    let metrics = metrics
        .trim_start_matches("metrics on http://")
        .trim_end_matches("/metrics")
        .to_string();

    let local = Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .args(["generate", "--prompt", "The capital of France is"])
        .args(["--temperature", "0", "--max-tokens", "8"])
        .output()
        .unwrap();
    assert!(local.status.success());
    let expected = String::from_utf8(local.stdout).unwrap();

    let body = r#"{"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}"#;
    // The second hoster's announcement may still be on its way.
    let mut answer = post(&addr, body);
    for _ in 0..50 {
        if answer.0 != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        answer = post(&addr, body);
    }
    let (status, text) = answer;
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["choices"][0]["text"].as_str().unwrap(),
        expected.trim_end_matches('\n')
    );
    assert_eq!(v["usage"]["completion_tokens"], 8);

    // The hoster's own metrics saw the tokens; both servers are ready.
    let (status, text) = crate::http::get(&metrics, "/metrics");
    assert_eq!(status, 200);
    let tokens = text
        .lines()
        .find_map(|l| l.strip_prefix("inference_server_tokens_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no token counter in {text}"));
    assert!(tokens >= 8.0, "{text}");
    assert!(text.contains("p2p_peers "), "{text}");
    assert_eq!(crate::http::get(&metrics, "/ready").0, 200);
    // The whole model is covered now: the gateway is ready.
    assert_eq!(crate::http::get(&addr, "/ready").0, 200);
    let (_, text) = crate::http::get(&addr, "/metrics");
    assert!(text.contains("inference_client_sessions_total"), "{text}");
}

#[test]
fn generate_and_chat_run_their_blocks_on_the_swarm() {
    let first = start(&["--role", "hoster", "--blocks", "0:10"]);
    let boot = first
        .wait_for("listening on ")
        .trim_start_matches("listening on ")
        .trim()
        .to_string();
    first.wait_for("serving blocks 0..10");
    let second = start(&[
        "--role",
        "hoster",
        "--blocks",
        "10:30",
        "--bootstrap",
        &boot,
    ]);
    second.wait_for("serving blocks 10..30");

    let run = |args: &[&str], stdin: &str| {
        let out = crate::process::run_with_input(args, stdin.as_bytes());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            err,
        )
    };
    let generate = [
        "generate",
        "--prompt",
        "The capital of France is",
        "--temperature",
        "0",
    ];
    let (ok, local, err) = run(&[&generate[..], &["--max-tokens", "12"]].concat(), "");
    assert!(ok, "{err}");
    // The second hoster's announcement may still be on its way: retry while
    // the swarm has no full route.
    let mut swarm = (false, String::new(), String::new());
    for _ in 0..50 {
        swarm = run(
            &[&generate[..], &["--max-tokens", "12", "--swarm", &boot]].concat(),
            "",
        );
        if swarm.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(swarm.0, "{}", swarm.2);
    assert_eq!(swarm.1, local);

    let chat = ["chat", "--temperature", "0", "--max-tokens", "24"];
    let turns = "Say hello.\n/exit\n";
    let (ok, local_chat, err) = run(&chat, turns);
    assert!(ok, "{err}");
    let (ok, swarm_chat, err) = run(&[&chat[..], &["--swarm", &boot]].concat(), turns);
    assert!(ok, "{err}");
    assert_eq!(swarm_chat, local_chat);
    assert!(!swarm_chat.trim().is_empty());
}

#[test]
fn a_validator_without_a_chain_is_refused_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .args([
            "node",
            "--role",
            "validator",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--role validator needs --chain"),
        "{stderr}"
    );
}
