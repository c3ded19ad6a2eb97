//! Runs `crates/api/tests/openai_client.py` with the official `openai`
//! package, from a venv that `tools/python-env.sh` makes on first use in the
//! per-user cache (like the default model is fetched on first use). Shared
//! with the inference crate's swarm tests through `#[path]`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root, two levels above the crate running the test.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, made once per test binary.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = workspace_root().join("tools/python-env.sh");
            let out = Command::new("bash")
                .arg(&script)
                .output()
                .expect("bash runs tools/python-env.sh");
            assert!(
                out.status.success(),
                "{} failed:\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}

/// Runs the client script with `args` (on a blocking thread) and panics
/// with its whole output unless it exits 0.
pub(crate) async fn run_openai_client(args: Vec<String>) {
    let shown = format!("{args:?}");
    let out = tokio::task::spawn_blocking(move || {
        let script = workspace_root().join("crates/api/tests/openai_client.py");
        Command::new(python())
            .arg(&script)
            .args(&args)
            .output()
            .expect("the venv's python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai_client.py {shown} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("all openai client checks passed"),
        "{stdout}"
    );
    // Shown with `--nocapture`: which checks ran.
    eprintln!("{stdout}");
}
