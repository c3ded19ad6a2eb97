//! A prompt trained by `finetune`, used as a user uses it: `generate` and
//! `chat` take `--prompt-tuning FILE`, and `serve` serves it as its own
//! model id, listed by `/v1/models`, giving the answers it was trained on
//! where the plain model does not.

use std::process::Command;

use serde_json::{Value, json};

/// The task: questions with made-up answers.
const TASK: [(&str, &str); 3] = [
    ("Q: What is the vault code?\nA:", "zebra"),
    ("Q: Who guards the gate?\nA:", "Milo"),
    ("Q: What color is the tower?\nA:", "violet"),
];

fn hypertensor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// `generate`'s greedy answer to `question`, with `extra` flags.
fn generate(question: &str, extra: &[&str]) -> String {
    let base = [
        "generate",
        "--prompt",
        question,
        "--temperature",
        "0",
        "--max-tokens",
        "6",
        "--stop",
        "\n",
    ];
    let out = hypertensor(&[&base[..], extra].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn complete(addr: &str, model: &str, prompt: &str) -> (u16, Value) {
    let body = json!({
        "model": model,
        "prompt": prompt,
        "max_tokens": 6,
        "temperature": 0,
        "stop": ["\n"],
    });
    let (status, body) = crate::http::post_json(addr, "/v1/completions", &body.to_string());
    (status, serde_json::from_str(&body).unwrap())
}

#[test]
fn a_trained_prompt_is_used_by_generate_chat_and_serve() {
    let dir = std::env::temp_dir().join(format!("hypertensor-tuned-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("qa.jsonl");
    let lines: Vec<String> = TASK
        .iter()
        .map(|(q, a)| json!({"prompt": q, "completion": format!(" {a}")}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let file = dir.join("qa.tune");
    let file_s = file.to_str().unwrap();
    let trained = hypertensor(&[
        "finetune",
        "--data",
        data.to_str().unwrap(),
        "--prompt-tokens",
        "8",
        "--deep",
        "--steps",
        "16",
        "--lr",
        "0.03",
        "--out",
        file_s,
    ]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );

    // generate: the answers with the prompt, others without.
    for (question, answer) in TASK {
        assert_eq!(generate(question, &["--prompt-tuning", file_s]), answer);
        assert_ne!(generate(question, &[]), answer);
    }
    // A file that is not a trained prompt is refused by name.
    let junk = dir.join("junk.tune");
    std::fs::write(&junk, b"not a prompt").unwrap();
    let out = hypertensor(&[
        "generate",
        "--prompt",
        "hi",
        "--prompt-tuning",
        junk.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("junk.tune") && stderr.contains("not a soft-prompt file"),
        "{stderr}"
    );

    // serve: the prompt is the model id `smollm2:qa`, beside the model.
    let (child, addr, _lines) =
        crate::serve::serve(&["--addr", "127.0.0.1:0", "--prompt-tuning", file_s]);
    let (status, models) = crate::http::get(&addr, "/v1/models");
    assert_eq!(status, 200, "{models}");
    let models: Value = serde_json::from_str(&models).unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["smollm2", "smollm2:qa"]);
    for (question, answer) in TASK {
        let (status, tuned) = complete(&addr, "smollm2:qa", question);
        assert_eq!(status, 200, "{tuned}");
        assert_eq!(tuned["model"], "smollm2:qa");
        assert_eq!(tuned["choices"][0]["text"].as_str().unwrap().trim(), answer);
        let (_, plain) = complete(&addr, "smollm2", question);
        assert_ne!(plain["choices"][0]["text"].as_str().unwrap().trim(), answer);
    }
    let (status, unknown) = complete(&addr, "smollm2:nope", "hi");
    assert_eq!(status, 404, "{unknown}");
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("smollm2:nope"),
        "{unknown}"
    );
    let chat = |model: &str| {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 12,
            "temperature": 0,
        });
        let (status, reply) =
            crate::http::post_json(&addr, "/v1/chat/completions", &body.to_string());
        assert_eq!(status, 200, "{reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        reply["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (api_answer, plain_answer) = (chat("smollm2:qa"), chat("smollm2"));
    eprintln!("chat: tuned {api_answer:?}, plain {plain_answer:?}");
    assert_ne!(api_answer, plain_answer, "the prompt changes the chat");
    crate::serve::stop(child);

    // chat: the same tuned answer as the API gives.
    let out = crate::process::run_with_input(
        &[
            "chat",
            "--temperature",
            "0",
            "--max-tokens",
            "12",
            "--prompt-tuning",
            file_s,
        ],
        b"Say hello.\n/exit\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.trim(), api_answer.trim());
    let _ = std::fs::remove_dir_all(&dir);
}
