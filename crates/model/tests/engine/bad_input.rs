//! Bad input gets a clear error, never a panic.

use std::collections::HashMap;
use std::io::{Read, Write};

use candle_core::quantized::gguf_file::{self, Value};
use hypertensor_model::{
    BlockSpan, Embedding, GenerationRequest, GgufFile, LanguageModel, LocalModel, ModelError,
    SamplingParams, generate,
};

use crate::{model, model_path};

fn temp_file(name: &str, bytes: &[u8]) -> tempfile::TempPath {
    let mut f = tempfile::Builder::new()
        .prefix(name)
        .suffix(".gguf")
        .tempfile()
        .unwrap();
    f.write_all(bytes).unwrap();
    f.into_temp_path()
}

#[test]
fn a_missing_file_names_the_path() {
    let err = LocalModel::load("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
}

#[test]
fn a_truncated_file_is_reported_as_truncated() {
    let mut bytes = Vec::new();
    std::fs::File::open(model_path())
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    // Cut in the middle of the tensor data.
    let cut = temp_file("truncated", &bytes[..bytes.len() / 2]);
    let err = LocalModel::load(&cut).unwrap_err();
    assert!(matches!(err, ModelError::InvalidGguf { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
    // Cut inside the header.
    let cut = temp_file("header", &bytes[..1000]);
    let err = LocalModel::load(&cut).unwrap_err();
    assert!(matches!(err, ModelError::InvalidGguf { .. }), "{err:?}");
}

#[test]
fn a_file_that_is_not_gguf_is_refused() {
    let junk = temp_file("junk", b"this is not a model file at all, just some text\n");
    let err = LocalModel::load(&junk).unwrap_err();
    assert!(matches!(err, ModelError::InvalidGguf { .. }), "{err:?}");
    let empty = temp_file("empty", b"");
    assert!(matches!(
        LocalModel::load(&empty),
        Err(ModelError::InvalidGguf { .. })
    ));
}

#[test]
fn corrupt_header_counts_are_refused() {
    let mut bytes = Vec::new();
    std::fs::File::open(model_path())
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    // The tensor count (u64 after magic and version) set absurdly high.
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let corrupt = temp_file("corrupt", &bytes[..4096]);
    let err = LocalModel::load(&corrupt).unwrap_err();
    assert!(matches!(err, ModelError::InvalidGguf { .. }), "{err:?}");
}

fn gguf_with_metadata(metadata: &[(&str, Value)]) -> tempfile::TempPath {
    let mut buf = std::io::Cursor::new(Vec::new());
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut buf, &md, &[]).unwrap();
    temp_file("meta", &buf.into_inner())
}

#[test]
fn an_unsupported_architecture_is_named() {
    let path = gguf_with_metadata(&[("general.architecture", Value::String("falcon".into()))]);
    let err = GgufFile::open(&path).unwrap().config().unwrap_err();
    assert!(
        matches!(&err, ModelError::UnsupportedArchitecture(a) if a == "falcon"),
        "{err:?}"
    );
    assert!(matches!(
        LocalModel::load(&path),
        Err(ModelError::UnsupportedArchitecture(_))
    ));
}

#[test]
fn missing_metadata_and_tensors_are_named() {
    let path = gguf_with_metadata(&[
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(64)),
        ("llama.attention.head_count", Value::U32(4)),
        ("llama.vocab_size", Value::U32(100)),
    ]);
    let err = GgufFile::open(&path).unwrap().config().unwrap_err();
    assert!(
        err.to_string().contains("llama.feed_forward_length"),
        "{err}"
    );

    let mut md: HashMap<&str, Value> = HashMap::new();
    md.insert("general.architecture", Value::String("llama".into()));
    md.insert("llama.embedding_length", Value::U32(64));
    md.insert("llama.feed_forward_length", Value::U32(128));
    md.insert("llama.block_count", Value::U32(2));
    md.insert("llama.attention.head_count", Value::U32(4));
    md.insert("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    md.insert("llama.vocab_size", Value::U32(100));
    let md: Vec<(&str, Value)> = md.into_iter().collect();
    let path = gguf_with_metadata(&md);
    let gguf = GgufFile::open(&path).unwrap();
    let err = BlockSpan::load(&gguf, 0..1).unwrap_err();
    assert!(err.to_string().contains("blk.0."), "{err}");
    let err = Embedding::load(&gguf).unwrap_err();
    assert!(err.to_string().contains("token_embd.weight"), "{err}");
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_before_any_work() {
    let llm = model();
    let context = llm.config().context_length;
    let request = GenerationRequest {
        prompt: vec![42; context + 10],
        max_tokens: 4,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let mut session = llm.session();
    let err = generate(&mut session, llm.tokenizer(), &request, |_| {
        panic!("no text may be produced")
    })
    .unwrap_err();
    assert!(
        matches!(err, ModelError::ContextOverflow { limit, .. } if limit == context),
        "{err:?}"
    );
    assert!(err.to_string().contains("context"), "{err}");
    // A direct forward beyond the context is refused too, leaving the
    // session usable.
    assert!(matches!(
        session.forward(&vec![42; context + 1]),
        Err(ModelError::ContextOverflow { .. })
    ));
    assert!(session.forward(&[42]).is_ok());
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused() {
    let mut session = model().session();
    let err = session.forward(&[1, 999_999]).unwrap_err();
    assert!(err.to_string().contains("999999"), "{err}");
    assert!(session.forward(&[]).is_err());
}
