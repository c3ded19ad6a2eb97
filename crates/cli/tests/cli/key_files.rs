//! Key files are written owner-only, and one that others can read is
//! used with a warning that says how to fix it (issue 11).

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hypertensor"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hypertensor-cli-keys-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_owner_only_files_even_over_a_readable_one() {
    let dir = TempDir::new("keygen");
    let path = dir.0.join("new.key");
    let out = run(&["keygen", "--output", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&path), 0o600);

    // --force over a world-readable file leaves it owner-only too.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["keygen", "--output", path.to_str().unwrap(), "--force"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_key_file_readable_by_others_is_used_with_a_chmod_warning() {
    let dir = TempDir::new("loose");
    let path = dir.0.join("loose.key");
    let key = path.to_str().unwrap();
    assert!(run(&["keygen", "--output", key]).status.success());
    // No chain listens on port 1: the command fails after reading the key.
    let tx = |key: &str| {
        let out = run(&[
            "tx",
            "--rpc",
            "ws://127.0.0.1:1",
            "--key",
            key,
            "transfer",
            "--to",
            "bob",
            "--amount",
            "1",
        ]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let quiet = tx(key);
    assert!(
        !quiet.contains("chmod"),
        "an owner-only key is not warned about: {quiet}"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = tx(key);
    assert!(
        warned.contains("WARN")
            && warned.contains("accessible by group or others (mode 644)")
            && warned.contains(&format!("chmod 600 {key}")),
        "{warned}"
    );
}
