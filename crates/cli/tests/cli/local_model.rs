//! `model fetch`, `generate` and `chat` on the real default model.

use std::process::{Command, Output};

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
    let out = crate::process::run_with_input(
        &["chat", "--temperature", "0", "--max-tokens", "48"],
        b"Say hello.\nWhat did I just ask you?\n/reset\nSay hello.\n/exit\n",
    );
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

#[test]
fn bench_reports_speed_and_resident_memory_for_a_named_model() {
    let json = std::env::temp_dir().join(format!("bench-{}.json", std::process::id()));
    let out = run(&[
        "bench",
        "--model",
        "gemma3-270m",
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "4",
        "--repetitions",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("resident MiB"), "{table}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let rows = results.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{results}");
    // Gemma 3 270M's file is 241 MiB, most of it the Q8_0 embedding table
    // that the model keeps packed: resident memory is of that order, not
    // the 4x an f32 expansion would take.
    let file = std::fs::metadata(dirs_model("gemma-3-270m-q4_k_m.gguf"))
        .unwrap()
        .len();
    for row in rows {
        assert!(
            row["tokens_per_second_mean"].as_f64().unwrap() > 0.0,
            "{row}"
        );
        let resident = row["resident_bytes"].as_u64().unwrap();
        assert!(
            resident > file / 2 && resident < 2 * file,
            "resident {resident} bytes for a {file}-byte file"
        );
    }
}

/// A model file in the per-user cache (where `model fetch` puts it).
fn dirs_model(name: &str) -> std::path::PathBuf {
    let out = run(&["model", "fetch", "gemma3-270m", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = std::path::PathBuf::from(stdout(&out).trim());
    assert_eq!(path.file_name().unwrap().to_str().unwrap(), name);
    path
}
