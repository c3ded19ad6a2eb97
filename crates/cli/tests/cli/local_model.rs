//! `model fetch`, `generate` and `chat` on the real default model.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn hypertensor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hypertensor"))
}

fn run(args: &[&str]) -> Output {
    hypertensor().args(args).output().expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn model_fetch_prints_the_cached_model_path() {
    let out = run(&["model", "fetch", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&out).trim().to_string();
    assert!(path.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"), "{path}");
    assert!(std::path::Path::new(&path).is_file());
}

#[test]
fn generate_prints_only_the_greedy_completion() {
    let out = run(&[
        "generate",
        "--prompt",
        "The capital of France is",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // Only the completion: no echo of the prompt, no log lines.
    assert!(text.starts_with(" Paris"), "{text:?}");
    assert!(!text.contains("capital of France"), "{text:?}");
    // Greedy is deterministic.
    let again = run(&[
        "generate",
        "--prompt",
        "The capital of France is",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
    ]);
    assert_eq!(stdout(&again), text);
}

#[test]
fn generate_honours_stop_strings_and_seeds() {
    let out = run(&[
        "generate",
        "--prompt",
        "The capital of France is",
        "--temperature",
        "0",
        "--max-tokens",
        "32",
        "--stop",
        ".",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end(), " Paris");

    let sampled = |seed: &str| {
        let out = run(&[
            "generate",
            "--prompt",
            "Once upon a time",
            "--temperature",
            "1.0",
            "--top-k",
            "40",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--max-tokens",
            "16",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(sampled("5"), sampled("5"));
    assert_ne!(sampled("5"), sampled("6"));
}

#[test]
fn generate_reports_bad_input_clearly() {
    let out = run(&[
        "generate",
        "--prompt",
        "hi",
        "--model",
        "/nonexistent/x.gguf",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/x.gguf"),
        "{}",
        stderr(&out)
    );
    let out = run(&["generate", "--prompt", "hi", "--temperature=-1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("temperature"), "{}", stderr(&out));
    let long = "word ".repeat(9000);
    let out = run(&["generate", "--prompt", &long, "--max-tokens", "4"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("context"), "{}", stderr(&out));
}

#[test]
fn chat_answers_each_turn_on_the_chat_template() {
    let mut child = hypertensor()
        .args(["chat", "--temperature", "0", "--max-tokens", "48"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chat starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Say hello.\nWhat did I just ask you?\n/reset\nSay hello.\n/exit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // One answer per turn, each ended by a newline; greedy decoding gives
    // the same first answer after /reset as at the start.
    let answers: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(answers.len() >= 3, "{text:?}");
    assert!(answers[0].to_lowercase().contains("hello"), "{text:?}");
    assert!(text.matches(answers[0]).count() >= 2, "{text:?}");
    assert!(
        !text.contains("<|im_end|>") && !text.contains("<|im_start|>"),
        "{text:?}"
    );
}

#[test]
fn generate_refuses_a_crafted_model_file_with_a_clear_error() {
    // Issue 11: a 121-byte GGUF with `general.alignment = 0` made the loader
    // divide by zero and exit 101.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"GGUF");
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes()); // tensors
    bytes.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    let key = b"general.alignment";
    bytes.extend_from_slice(&(key.len() as u64).to_le_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(&4u32.to_le_bytes()); // u32
    bytes.extend_from_slice(&0u32.to_le_bytes());
    let name = b"token_embd.weight";
    bytes.extend_from_slice(&(name.len() as u64).to_le_bytes());
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&1u32.to_le_bytes()); // dims
    bytes.extend_from_slice(&2u64.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes()); // f32
    bytes.extend_from_slice(&0u64.to_le_bytes()); // offset
    bytes.resize(121, 0);
    let path = std::env::temp_dir().join(format!(
        "hypertensor-cli-alignment-0-{}.gguf",
        std::process::id()
    ));
    std::fs::write(&path, &bytes).unwrap();

    let out = run(&[
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        "Hello",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("not a valid GGUF file")
            && err.contains("general.alignment")
            && err.contains("power of two"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
    std::fs::remove_file(&path).unwrap();
}
