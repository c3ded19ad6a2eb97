//! `hypertensor finetune` as a user runs it, on the local model: it trains
//! and saves soft prompts, resumes from its checkpoint, and names a bad
//! line of the data.

use std::process::Command;

fn finetune(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .arg("finetune")
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn finetune_trains_saves_and_resumes() {
    let dir = std::env::temp_dir().join(format!("hypertensor-finetune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"Q: What is the vault code?\\nA:\", \"completion\": \" zebra\"}\n\
         {\"prompt\": \"Q: Who guards the gate?\\nA:\", \"completion\": \" Milo\"}\n",
    )
    .unwrap();
    let out = dir.join("prompts.bin");
    let (data, out_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let common = [
        "--data",
        data,
        "--prompt-tokens",
        "4",
        "--lr",
        "0.03",
        "--out",
        out_s,
    ];
    let first = finetune(&[&common[..], &["--steps", "2"]].concat());
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(stderr.contains("step 2/2  loss "), "{stderr}");
    assert!(out.exists());
    let resumed = finetune(&[&common[..], &["--steps", "3", "--resume"]].concat());
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("step 3/3") && !stderr.contains("step 1/3"),
        "{stderr}"
    );
    // Resuming with other prompt options is refused by name.
    let other = finetune(&[&common[..], &["--steps", "4", "--resume", "--deep"]].concat());
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("not what these options ask"));

    std::fs::write(
        dir.join("bad.jsonl"),
        "{\"prompt\": \"a\", \"completion\": \" b\"}\nnot json\n",
    )
    .unwrap();
    let bad = finetune(&[
        "--data",
        dir.join("bad.jsonl").to_str().unwrap(),
        "--out",
        out_s,
    ]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("bad.jsonl line 2: not JSON"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
