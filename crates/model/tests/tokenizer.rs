//! Tokenizer and chat-template tests against references produced by
//! llama.cpp and jinja2: `fixtures/smollm2_reference.json` (made by
//! `tools/reference/smollm2_reference.py`) and `fixtures/spm-tiny.*`
//! (made by `tools/reference/spm_tiny_reference.py`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{Content, Value};
use hypertensor_model::tokenizer::{
    ChatMessage, ChatTemplate, Tokenizer, TokenizerError, TokenizerKind,
};
use serde::Deserialize;

/// Where the default model GGUF is: `$HYPERTENSOR_MODEL`, else the path the
/// reference fixtures were made from.
/// The default model: `$HYPERTENSOR_MODEL`, or the per-user cached copy
/// (fetched and hash-checked on first use).
fn model_path() -> PathBuf {
    std::env::var_os("HYPERTENSOR_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            hypertensor_fetch::default_model_path(true).expect("the default model is available")
        })
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_metadata(path: &Path) -> HashMap<String, Value> {
    let mut file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    Content::read(&mut file)
        .unwrap_or_else(|e| panic!("cannot read GGUF {}: {e}", path.display()))
        .metadata
}

fn smollm2_metadata() -> &'static HashMap<String, Value> {
    static METADATA: OnceLock<HashMap<String, Value>> = OnceLock::new();
    METADATA.get_or_init(|| read_metadata(&model_path()))
}

fn smollm2() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| Tokenizer::from_gguf(smollm2_metadata()).expect("SmolLM2 tokenizer"))
}

#[derive(Deserialize)]
struct SmolReference {
    prompts: Vec<PromptCase>,
    chat_templates: Vec<ChatCase>,
}

#[derive(Deserialize)]
struct PromptCase {
    name: String,
    text: String,
    /// llama.cpp: add_special = true, parse_special = true.
    ids: Vec<u32>,
    /// llama.cpp: add_special = true, parse_special = false.
    ids_parse_special_false: Vec<u32>,
    llama_cpp: LlamaCppRun,
}

#[derive(Deserialize)]
struct LlamaCppRun {
    greedy_ids: Vec<u32>,
    /// llama.cpp's detokenization of `greedy_ids`, invalid UTF-8 replaced.
    greedy_text: String,
}

#[derive(Deserialize)]
struct ChatCase {
    name: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    /// jinja2's rendering, the way transformers sets it up.
    rendered: String,
    /// llama.cpp's tokenization of `rendered` (special tokens parsed).
    ids: Vec<u32>,
}

fn smol_reference() -> &'static SmolReference {
    static REFERENCE: OnceLock<SmolReference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let text = std::fs::read_to_string(fixture("smollm2_reference.json"))
            .expect("fixtures/smollm2_reference.json");
        serde_json::from_str(&text).expect("parse smollm2_reference.json")
    })
}

/// Decodes `ids` one token at a time and checks that every chunk is
/// complete text; returns the concatenation.
fn stream(tokenizer: &Tokenizer, ids: &[u32], skip_special: bool) -> (String, usize) {
    let mut decoder = tokenizer.stream_decoder(skip_special);
    let mut text = String::new();
    let mut held_back = 0;
    for &id in ids {
        let chunk = decoder.push(id).expect("id in vocabulary");
        if chunk.is_empty() {
            held_back += 1;
        }
        text.push_str(&chunk);
    }
    text.push_str(&decoder.finish());
    (text, held_back)
}

// ---------------------------------------------------------------- SmolLM2

#[test]
fn smollm2_metadata_is_read() {
    let tok = smollm2();
    assert_eq!(tok.kind(), TokenizerKind::ByteLevelBpe);
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(!tok.add_bos_token());
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.id_to_token(1), Some("<|im_start|>"));
    assert!(tok.is_control(1));
    assert!(!tok.is_control(504));
}

#[test]
fn smollm2_end_of_generation_tokens_are_llama_cpps() {
    // llama.cpp 0.3.36 (llama_vocab_is_eog over the whole vocabulary):
    // <|endoftext|>, <|im_end|> (the eos) and <reponame> (its FIM repo token).
    let tok = smollm2();
    assert_eq!(tok.eog_ids().collect::<Vec<_>>(), [0, 2, 4]);
    assert!(tok.is_eog(2));
    assert!(!tok.is_eog(1));
    assert!(!tok.is_eog(u32::MAX));
}

#[test]
fn smollm2_prompts_tokenize_as_llama_cpp() {
    let tok = smollm2();
    for case in &smol_reference().prompts {
        assert_eq!(
            tok.encode_with_bos(&case.text, true).unwrap(),
            case.ids,
            "{} (parse_special)",
            case.name
        );
        assert_eq!(
            tok.encode_with_bos(&case.text, false).unwrap(),
            case.ids_parse_special_false,
            "{} (no parse_special)",
            case.name
        );
        // SmolLM2 asks for no BOS, so both entry points agree.
        assert_eq!(
            tok.encode(&case.text, true).unwrap(),
            case.ids,
            "{}",
            case.name
        );
    }
}

#[test]
fn smollm2_chat_templates_render_as_jinja2_and_tokenize_as_llama_cpp() {
    let template = ChatTemplate::from_gguf(smollm2_metadata()).unwrap();
    let tok = smollm2();
    for case in &smol_reference().chat_templates {
        let rendered = template
            .render(&case.messages, case.add_generation_prompt)
            .unwrap();
        assert_eq!(rendered, case.rendered, "{}", case.name);
        assert_eq!(
            tok.encode_with_bos(&rendered, true).unwrap(),
            case.ids,
            "{}",
            case.name
        );
    }
}

#[test]
fn smollm2_decode_inverts_encode() {
    let tok = smollm2();
    let reference = smol_reference();
    let texts = reference
        .prompts
        .iter()
        .map(|p| p.text.as_str())
        .chain(reference.chat_templates.iter().map(|c| c.rendered.as_str()));
    for text in texts {
        let with_special = tok.encode(text, true).unwrap();
        assert_eq!(tok.decode(&with_special, false).unwrap(), text);
        let literal = tok.encode(text, false).unwrap();
        // Without parse_special, "<|im_start|>" is ordinary text and survives skipping.
        assert_eq!(tok.decode(&literal, true).unwrap(), text);
    }
}

#[test]
fn smollm2_skip_special_leaves_out_control_tokens() {
    let tok = smollm2();
    let ids = tok
        .encode("<|im_start|>assistant\nBonjour !<|im_end|>\n", true)
        .unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "assistant\nBonjour !\n");
}

#[test]
fn smollm2_decodes_llama_cpp_generations_like_llama_cpp() {
    let tok = smollm2();
    for case in &smol_reference().prompts {
        let ids = &case.llama_cpp.greedy_ids;
        let full = tok.decode(ids, true).unwrap();
        assert_eq!(full, case.llama_cpp.greedy_text, "{}", case.name);
    }
}

#[test]
fn streaming_decode_equals_full_decode() {
    let tok = smollm2();
    let mut any_held_back = false;
    for case in &smol_reference().prompts {
        for ids in [
            &case.ids,
            &case.ids_parse_special_false,
            &case.llama_cpp.greedy_ids,
        ] {
            for skip_special in [false, true] {
                let (streamed, held_back) = stream(tok, ids, skip_special);
                assert_eq!(
                    streamed,
                    tok.decode(ids, skip_special).unwrap(),
                    "{}",
                    case.name
                );
                any_held_back |= held_back > 0;
            }
        }
    }
    // The emoji prompt splits characters over several tokens.
    assert!(any_held_back, "no multi-token character in the fixtures");
}

#[test]
fn streaming_holds_a_split_character_until_complete() {
    let tok = smollm2();
    // "👍" is four bytes; byte-level BPE may need several tokens for it.
    let ids = tok.encode("a👍", false).unwrap();
    let mut decoder = tok.stream_decoder(true);
    let chunks: Vec<String> = ids.iter().map(|&id| decoder.push(id).unwrap()).collect();
    assert_eq!(decoder.finish(), "");
    assert_eq!(chunks.concat(), "a👍");
    assert!(chunks.iter().any(|c| c.contains('👍')));
    assert!(
        chunks
            .iter()
            .all(|c| c.is_empty() || c == "a" || c.contains('👍') || c == "a👍")
    );
}

#[test]
fn long_input_round_trips_without_blowup() {
    let tok = smollm2();
    // 20k+ characters: prose, code, digits, a 5k-character word without
    // spaces (one pre-tokenizer word) and multi-byte text.
    let mut text = String::new();
    while text.chars().count() < 14_000 {
        text.push_str("The quick brown fox jumps over the lazy dog 1234567890. ");
        text.push_str("fn main() { let x = vec![1, 2, 3]; }\n\t");
        text.push_str("Café — 日本語 🤖 ");
    }
    text.push_str(&"abcdefghij".repeat(500));
    text.push_str(&" ".repeat(2000));
    text.push_str(&"é".repeat(2000));
    assert!(text.chars().count() > 20_000);
    let ids = tok.encode(&text, false).unwrap();
    assert!(ids.len() < text.len());
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}

#[test]
fn out_of_range_ids_are_errors() {
    let tok = smollm2();
    let err = tok.decode(&[504, 49152], false).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::TokenIdOutOfRange {
                id: 49152,
                vocab_size: 49152
            }
        ),
        "{err:?}"
    );
    let mut decoder = tok.stream_decoder(false);
    assert!(decoder.push(u32::MAX).is_err());
    assert_eq!(decoder.push(504).unwrap(), "The");
}

// ------------------------------------------------- SentencePiece (spm-tiny)

#[derive(Deserialize)]
struct SpmReference {
    vocab_size: usize,
    bos_id: u32,
    eos_id: u32,
    unk_id: u32,
    add_bos: bool,
    /// Cases where sentencepiece and llama.cpp disagree (none expected).
    disagreements: Vec<serde_json::Value>,
    cases: Vec<SpmCase>,
}

#[derive(Deserialize)]
struct SpmCase {
    name: String,
    text: String,
    /// sentencepiece's encoding (no BOS).
    ids: Vec<u32>,
    /// sentencepiece's decoding of `ids`.
    decoded: String,
    /// llama.cpp: add_special = false, parse_special = false.
    llama_cpp_ids: Vec<u32>,
    /// llama.cpp: add_special = true (BOS in front).
    llama_cpp_ids_add_special: Vec<u32>,
    /// llama.cpp: parse_special = true.
    llama_cpp_ids_parse_special: Vec<u32>,
}

fn spm_reference() -> &'static SpmReference {
    static REFERENCE: OnceLock<SpmReference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let text =
            std::fs::read_to_string(fixture("spm-tiny.json")).expect("fixtures/spm-tiny.json");
        serde_json::from_str(&text).expect("parse spm-tiny.json")
    })
}

fn spm_tiny() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        Tokenizer::from_gguf(&read_metadata(&fixture("spm-tiny.gguf"))).expect("spm-tiny tokenizer")
    })
}

#[test]
fn spm_metadata_is_read() {
    let tok = spm_tiny();
    let reference = spm_reference();
    assert_eq!(tok.kind(), TokenizerKind::SentencePiece);
    assert_eq!(tok.vocab_size(), reference.vocab_size);
    assert_eq!(tok.bos_id(), Some(reference.bos_id));
    assert_eq!(tok.eos_id(), Some(reference.eos_id));
    assert_eq!(tok.unk_id(), Some(reference.unk_id));
    assert_eq!(tok.add_bos_token(), reference.add_bos);
    assert!(tok.is_eog(reference.eos_id));
    assert!(reference.disagreements.is_empty());
}

#[test]
fn spm_tokenizes_as_llama_cpp_and_sentencepiece() {
    let tok = spm_tiny();
    for case in &spm_reference().cases {
        let plain = tok.encode(&case.text, false).unwrap();
        assert_eq!(plain, case.llama_cpp_ids, "{}", case.name);
        assert_eq!(plain, case.ids, "{} (sentencepiece)", case.name);
        assert_eq!(
            tok.encode_with_bos(&case.text, false).unwrap(),
            case.llama_cpp_ids_add_special,
            "{} (add_special)",
            case.name
        );
        assert_eq!(
            tok.encode(&case.text, true).unwrap(),
            case.llama_cpp_ids_parse_special,
            "{} (parse_special)",
            case.name
        );
    }
}

#[test]
fn spm_decode_inverts_encode() {
    let tok = spm_tiny();
    for case in &spm_reference().cases {
        let plain = tok.encode(&case.text, false).unwrap();
        assert_eq!(
            tok.decode(&plain, false).unwrap(),
            case.decoded,
            "{}",
            case.name
        );
        assert_eq!(
            tok.decode(&plain, false).unwrap(),
            case.text,
            "{}",
            case.name
        );
        // BOS is a control token: skipped, and the space added after it removed.
        let with_bos = tok.encode_with_bos(&case.text, false).unwrap();
        assert_eq!(
            tok.decode(&with_bos, true).unwrap(),
            case.text,
            "{}",
            case.name
        );
        // Control tokens parsed from the text come back literally.
        let special = tok.encode(&case.text, true).unwrap();
        assert_eq!(
            tok.decode(&special, false).unwrap(),
            case.text,
            "{}",
            case.name
        );
    }
}

#[test]
fn spm_streaming_decode_equals_full_decode() {
    let tok = spm_tiny();
    let mut any_held_back = false;
    for case in &spm_reference().cases {
        for ids in [
            &case.llama_cpp_ids,
            &case.llama_cpp_ids_add_special,
            &case.llama_cpp_ids_parse_special,
        ] {
            for skip_special in [false, true] {
                let (streamed, held_back) = stream(tok, ids, skip_special);
                assert_eq!(
                    streamed,
                    tok.decode(ids, skip_special).unwrap(),
                    "{}",
                    case.name
                );
                any_held_back |= held_back > 0;
            }
        }
    }
    // Byte-fallback tokens spread characters over several tokens.
    assert!(any_held_back);
}

// ----------------------------------------------------------- bad metadata

fn smollm2_with(change: impl FnOnce(&mut HashMap<String, Value>)) -> HashMap<String, Value> {
    let mut metadata = smollm2_metadata().clone();
    change(&mut metadata);
    metadata
}

fn error_of(metadata: &HashMap<String, Value>) -> TokenizerError {
    Tokenizer::from_gguf(metadata).expect_err("metadata should be rejected")
}

#[test]
fn missing_tokenizer_model_names_the_key() {
    let err = error_of(&smollm2_with(|m| {
        m.remove("tokenizer.ggml.model");
    }));
    assert!(
        matches!(&err, TokenizerError::MissingKey { key } if key == "tokenizer.ggml.model"),
        "{err:?}"
    );
    assert!(err.to_string().contains("tokenizer.ggml.model"));
}

#[test]
fn unknown_tokenizer_model_is_named() {
    let err = error_of(&smollm2_with(|m| {
        m.insert("tokenizer.ggml.model".into(), Value::String("bert".into()));
    }));
    assert!(
        matches!(&err, TokenizerError::UnsupportedModel { model } if model == "bert"),
        "{err:?}"
    );
}

#[test]
fn unknown_pre_tokenizer_is_named() {
    let err = error_of(&smollm2_with(|m| {
        m.insert("tokenizer.ggml.pre".into(), Value::String("klingon".into()));
    }));
    assert!(
        matches!(&err, TokenizerError::UnsupportedPreTokenizer { pre } if pre == "klingon"),
        "{err:?}"
    );
}

#[test]
fn ill_typed_keys_name_the_key_and_types() {
    let err = error_of(&smollm2_with(|m| {
        m.insert("tokenizer.ggml.tokens".into(), Value::U32(7));
    }));
    assert!(
        matches!(&err, TokenizerError::WrongType { key, found, .. }
            if key == "tokenizer.ggml.tokens" && found == "u32"),
        "{err:?}"
    );

    let err = error_of(&smollm2_with(|m| {
        m.insert("tokenizer.ggml.model".into(), Value::Bool(true));
    }));
    assert!(
        matches!(&err, TokenizerError::WrongType { key, .. } if key == "tokenizer.ggml.model"),
        "{err:?}"
    );

    let err = error_of(&smollm2_with(|m| {
        m.insert(
            "tokenizer.ggml.eos_token_id".into(),
            Value::String("2".into()),
        );
    }));
    assert!(
        matches!(&err, TokenizerError::WrongType { key, .. } if key == "tokenizer.ggml.eos_token_id"),
        "{err:?}"
    );

    let err = error_of(&smollm2_with(|m| {
        if let Some(Value::Array(merges)) = m.get_mut("tokenizer.ggml.merges") {
            merges[3] = Value::F32(1.0);
        }
    }));
    assert!(
        matches!(&err, TokenizerError::WrongType { key, .. } if key == "tokenizer.ggml.merges[3]"),
        "{err:?}"
    );
}

#[test]
fn inconsistent_vocabulary_is_rejected() {
    let err = error_of(&smollm2_with(|m| {
        if let Some(Value::Array(types)) = m.get_mut("tokenizer.ggml.token_type") {
            types.truncate(100);
        }
    }));
    assert!(
        matches!(&err, TokenizerError::InvalidMetadata { key, .. } if key == "tokenizer.ggml.token_type"),
        "{err:?}"
    );

    let err = error_of(&smollm2_with(|m| {
        if let Some(Value::Array(tokens)) = m.get_mut("tokenizer.ggml.tokens") {
            tokens[5] = tokens[6].clone();
        }
    }));
    assert!(
        matches!(&err, TokenizerError::InvalidMetadata { key, .. } if key == "tokenizer.ggml.tokens"),
        "{err:?}"
    );

    let err = error_of(&smollm2_with(|m| {
        m.remove("tokenizer.ggml.merges");
    }));
    assert!(
        matches!(&err, TokenizerError::MissingKey { key } if key == "tokenizer.ggml.merges"),
        "{err:?}"
    );

    let err = error_of(&smollm2_with(|m| {
        m.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
        m.remove("tokenizer.ggml.bos_token_id");
    }));
    assert!(
        matches!(&err, TokenizerError::InvalidMetadata { key, .. } if key == "tokenizer.ggml.add_bos_token"),
        "{err:?}"
    );
}

#[test]
fn add_bos_token_from_metadata_is_honoured() {
    let metadata = smollm2_with(|m| {
        m.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
    });
    let tok = Tokenizer::from_gguf(&metadata).unwrap();
    let plain = tok.encode("Hello", false).unwrap();
    let with_bos = tok.encode_with_bos("Hello", false).unwrap();
    assert_eq!(with_bos[0], 1);
    assert_eq!(&with_bos[1..], plain.as_slice());
}

#[test]
fn chat_template_errors_are_clear() {
    let err = ChatTemplate::from_gguf(&smollm2_with(|m| {
        m.remove("tokenizer.chat_template");
    }))
    .unwrap_err();
    assert!(
        matches!(&err, TokenizerError::MissingKey { key } if key == "tokenizer.chat_template"),
        "{err:?}"
    );

    let err = ChatTemplate::from_gguf(&smollm2_with(|m| {
        m.insert(
            "tokenizer.chat_template".into(),
            Value::String("{% for m in messages %}{{ m.content }".into()),
        );
    }))
    .unwrap_err();
    assert!(matches!(err, TokenizerError::Template { .. }), "{err:?}");

    let template = ChatTemplate::new(
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('first message must be system') }}{% endif %}",
        "<s>",
        "</s>",
    )
    .unwrap();
    let err = template
        .render(&[ChatMessage::user("hi")], true)
        .unwrap_err();
    assert!(
        err.to_string().contains("first message must be system"),
        "{err}"
    );
}
