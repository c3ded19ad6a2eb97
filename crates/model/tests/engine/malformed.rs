//! Crafted and damaged GGUF files are refused with an error that names what
//! is wrong, and never panic: regressions from issue 11, and a property test
//! that mutates the real model's header.

use std::io::Write;
use std::sync::OnceLock;

use hypertensor_model::gguf::{GgufError, GgufHeader, GgufLimits};
use hypertensor_model::{
    ChatMessage, ChatTemplate, LocalModel, ModelConfig, ModelError, Tokenizer,
};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::model_path;
use crate::raw_gguf::{Field, FieldKind, RawGguf, RawTensor, RawValue};

fn temp_file(bytes: &[u8]) -> tempfile::TempPath {
    let mut f = tempfile::Builder::new()
        .prefix("malformed")
        .suffix(".gguf")
        .tempfile()
        .unwrap();
    f.write_all(bytes).unwrap();
    f.into_temp_path()
}

/// The real model's bytes, its parsed header, and where its data begins.
struct Real {
    bytes: Vec<u8>,
    header: RawGguf,
    data_offset: usize,
}

fn real() -> &'static Real {
    static REAL: OnceLock<Real> = OnceLock::new();
    REAL.get_or_init(|| {
        let bytes = std::fs::read(model_path()).unwrap();
        let (header, end) = RawGguf::parse(&bytes);
        let data_offset = end.next_multiple_of(32);
        // The raw encoder reproduces the file's header byte for byte.
        assert_eq!(header.encode(32).0, bytes[..data_offset]);
        Real {
            bytes,
            header,
            data_offset,
        }
    })
}

/// The real model with an edited header (same size, so same data layout).
fn real_file_with(edit: impl FnOnce(&mut RawGguf)) -> tempfile::TempPath {
    let real = real();
    let mut header = real.header.clone();
    edit(&mut header);
    let mut bytes = header.encode(32).0;
    bytes.extend_from_slice(&real.bytes[real.data_offset..]);
    temp_file(&bytes)
}

fn set_f32(header: &mut RawGguf, key: &str, value: f32) {
    *header.get_mut(key).unwrap() = RawValue::Scalar(6, value.to_le_bytes().to_vec());
}

fn assert_metadata_error(err: ModelError, key: &str, shows: &str) {
    match &err {
        ModelError::Metadata { key: k, .. } if k == key => {}
        other => panic!("expected an error about `{key}`, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(key) && message.contains(shows),
        "{message}"
    );
}

#[test]
fn a_121_byte_file_with_alignment_zero_is_refused() {
    let crafted = RawGguf {
        version: 3,
        kvs: vec![(
            "general.alignment".into(),
            RawValue::Scalar(4, 0u32.to_le_bytes().to_vec()),
        )],
        tensors: vec![RawTensor {
            name: b"token_embd.weight".to_vec(),
            dims: vec![2],
            type_id: 0,
            offset: 0,
        }],
    };
    let mut bytes = crafted.encode(1).0;
    bytes.resize(121, 0);
    let path = temp_file(&bytes);
    let err = LocalModel::load(&path).unwrap_err();
    assert!(
        matches!(
            &err,
            ModelError::InvalidGguf {
                problem: GgufError::Alignment(_),
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("general.alignment") && message.contains("power of two"),
        "{message}"
    );
}

#[test]
fn nan_rms_epsilon_is_refused() {
    let key = "llama.attention.layer_norm_rms_epsilon";
    let path = real_file_with(|h| set_f32(h, key, f32::NAN));
    assert_metadata_error(LocalModel::load(&path).unwrap_err(), key, "NaN");
    let path = real_file_with(|h| set_f32(h, key, 0.0));
    assert_metadata_error(LocalModel::load(&path).unwrap_err(), key, "0 is not");
}

#[test]
fn zero_rope_freq_base_is_refused() {
    let key = "llama.rope.freq_base";
    let path = real_file_with(|h| set_f32(h, key, 0.0));
    assert_metadata_error(LocalModel::load(&path).unwrap_err(), key, "0 is not");
    let path = real_file_with(|h| set_f32(h, key, f32::INFINITY));
    assert_metadata_error(LocalModel::load(&path).unwrap_err(), key, "inf");
}

#[test]
fn heads_that_do_not_divide_the_width_are_refused() {
    let path = real_file_with(|h| {
        *h.get_mut("llama.attention.head_count").unwrap() =
            RawValue::Scalar(4, 7u32.to_le_bytes().to_vec());
    });
    assert_metadata_error(
        LocalModel::load(&path).unwrap_err(),
        "llama.attention.head_count",
        "do not divide",
    );
    let path = real_file_with(|h| {
        *h.get_mut("llama.context_length").unwrap() =
            RawValue::Scalar(4, 0u32.to_le_bytes().to_vec());
    });
    assert_metadata_error(
        LocalModel::load(&path).unwrap_err(),
        "llama.context_length",
        "outside",
    );
}

/// The real header with one edit, read with the real file's length.
fn read_edited(edit: impl FnOnce(&mut RawGguf)) -> Result<GgufHeader, GgufError> {
    let real = real();
    let mut header = real.header.clone();
    edit(&mut header);
    let bytes = header.encode(32).0;
    GgufHeader::read(&bytes[..], real.bytes.len() as u64, &GgufLimits::default())
}

#[test]
fn the_real_header_reads_whole() {
    let header = read_edited(|_| {}).unwrap();
    assert_eq!(header.version(), 3);
    assert_eq!(header.alignment(), 32);
    assert_eq!(header.metadata().len(), 33);
    assert_eq!(header.tensor_count(), 272);
    assert_eq!(header.tensor_data_offset(), real().data_offset as u64);
}

#[test]
fn impossible_tensor_entries_are_named() {
    fn first(h: &mut RawGguf) -> &mut RawTensor {
        &mut h.tensors[0]
    }
    type Edit = Box<dyn Fn(&mut RawGguf)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("5 dimensions", Box::new(|h| first(h).dims = vec![1; 5])),
        ("0 dimensions", Box::new(|h| first(h).dims.clear())),
        ("dimension 1 is 0", Box::new(|h| first(h).dims[1] = 0)),
        (
            "more elements than can exist",
            Box::new(|h| first(h).dims = vec![1 << 40, 1 << 40]),
        ),
        (
            "not a multiple of the Q8_0 block size 32",
            Box::new(|h| first(h).dims[0] = 33),
        ),
        (
            "unsupported type id 99",
            Box::new(|h| first(h).type_id = 99),
        ),
        (
            "not a multiple of the alignment",
            Box::new(|h| first(h).offset = 3),
        ),
        ("ends at byte", Box::new(|h| first(h).offset = 1 << 40)),
        ("overflows", Box::new(|h| first(h).offset = u64::MAX - 31)),
        ("overlap", Box::new(|h| h.tensors[1].offset = 32)),
        (
            "appears twice",
            Box::new(|h| h.tensors[1].name = h.tensors[0].name.clone()),
        ),
    ];
    for (expected, edit) in cases {
        let err = read_edited(edit).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn huge_declared_lengths_are_refused_before_allocating() {
    let real = real();
    let mut bytes = real.header.encode(32).0;
    // The tensor count, the metadata count, then the first key's length.
    for (at, what) in [
        (8, "tensor count"),
        (16, "metadata count"),
        (24, "metadata key #0"),
    ] {
        let mut b = bytes.clone();
        b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let err = GgufHeader::read(&b[..], real.bytes.len() as u64, &GgufLimits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(what) && err.contains("limit"), "{err}");
    }
    // An array length past the end of the file.
    let at = bytes
        .windows(21)
        .position(|w| w == b"tokenizer.ggml.tokens")
        .unwrap()
        + 21
        + 4 // the value type: array
        + 4; // the element type: string
    bytes[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let err = GgufHeader::read(&bytes[..], bytes.len() as u64, &GgufLimits::default()).unwrap_err();
    assert!(matches!(err, GgufError::DoesNotFit { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");
    // A lower limit refuses the real header, naming it.
    let small = GgufLimits {
        max_header_bytes: 1 << 20,
        ..GgufLimits::default()
    };
    let err = GgufHeader::read(&real.bytes[..], real.bytes.len() as u64, &small).unwrap_err();
    assert!(matches!(err, GgufError::OverLimit { .. }), "{err:?}");
}

#[test]
fn bad_alignments_are_refused() {
    for (value, expected) in [
        (
            RawValue::Scalar(4, 0u32.to_le_bytes().to_vec()),
            "not a power of two",
        ),
        (
            RawValue::Scalar(4, 48u32.to_le_bytes().to_vec()),
            "not a power of two",
        ),
        (
            RawValue::Scalar(10, (1u64 << 40).to_le_bytes().to_vec()),
            "above the limit",
        ),
        (
            RawValue::Str(b"32".to_vec()),
            "expected an unsigned integer",
        ),
    ] {
        let err = read_edited(|h| h.kvs.push(("general.alignment".into(), value)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("general.alignment") && err.contains(expected),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------
// The property test.

/// The fuzzing seed: the real header with its three big tokenizer arrays cut
/// to their first tokens (and the merges among them), so one case parses in
/// microseconds while every key, type and tensor entry stays real.
struct Seed {
    bytes: Vec<u8>,
    fields: Vec<Field>,
    /// Bytes of tensor data the real file has after its header.
    data_len: u64,
}

const SEED_TOKENS: usize = 2048;

fn seed() -> &'static Seed {
    static SEED: OnceLock<Seed> = OnceLock::new();
    SEED.get_or_init(|| {
        let real = real();
        let header = seed_header();
        let (bytes, fields) = header.encode(32);
        Seed {
            bytes,
            fields,
            data_len: (real.bytes.len() - real.data_offset) as u64,
        }
    })
}

/// The real header with its tokenizer arrays cut to [`SEED_TOKENS`].
fn seed_header() -> RawGguf {
    let mut header = real().header.clone();
    let mut kept = std::collections::HashSet::new();
    if let Some(RawValue::Array(_, tokens)) = header.get_mut("tokenizer.ggml.tokens") {
        tokens.truncate(SEED_TOKENS);
        for t in tokens.iter() {
            if let RawValue::Str(s) = t {
                kept.insert(s.clone());
            }
        }
    }
    if let Some(RawValue::Array(_, types)) = header.get_mut("tokenizer.ggml.token_type") {
        types.truncate(SEED_TOKENS);
    }
    if let Some(RawValue::Array(_, merges)) = header.get_mut("tokenizer.ggml.merges") {
        merges.retain(|m| {
            let RawValue::Str(m) = m else { return false };
            let Some(space) = m.iter().position(|&b| b == b' ') else {
                return false;
            };
            let joined: Vec<u8> = [&m[..space], &m[space + 1..]].concat();
            kept.contains(&m[..space]) && kept.contains(&m[space + 1..]) && kept.contains(&joined)
        });
    }
    header
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    Length(Index, u64),
    Tag(Index, u32),
    Float(Index, f32),
    Int(Index, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![Just(0u8), Just(0xff), any::<u8>()];
    let length = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 31),
        Just(u32::MAX as u64),
        Just(1 << 63),
        Just(1 << 32),
        Just(1 << 40),
        0..64u64,
        any::<u64>(),
    ];
    let tag = prop_oneof![0..16u32, Just(30), Just(u32::MAX), any::<u32>()];
    let float = prop_oneof![
        Just(f32::NAN),
        Just(0.0f32),
        Just(-0.0),
        Just(-1.0),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(f32::MIN_POSITIVE),
        Just(1e30),
        any::<f32>(),
    ];
    let int = prop_oneof![Just(0u32), Just(1), Just(7), Just(u32::MAX), any::<u32>()];
    prop_oneof![
        2 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), byte).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1..17usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        4 => (any::<Index>(), length).prop_map(|(i, v)| Mutation::Length(i, v)),
        2 => (any::<Index>(), tag).prop_map(|(i, v)| Mutation::Tag(i, v)),
        2 => (any::<Index>(), float).prop_map(|(i, v)| Mutation::Float(i, v)),
        2 => (any::<Index>(), int).prop_map(|(i, v)| Mutation::Int(i, v)),
    ]
}

/// Overwrites the field of `kind` chosen by `index` (positions are those of
/// the seed; after an insertion or deletion they land elsewhere, which is
/// fine for a fuzzer).
fn set_field(bytes: &mut [u8], fields: &[Field], kind: FieldKind, index: &Index, value: &[u8]) {
    let of_kind: Vec<&Field> = fields.iter().filter(|f| f.kind == kind).collect();
    if of_kind.is_empty() {
        return;
    }
    let at = of_kind[index.index(of_kind.len())].at;
    if let Some(dst) = bytes.get_mut(at..at + value.len()) {
        dst.copy_from_slice(value);
    }
}

fn apply(bytes: &mut Vec<u8>, fields: &[Field], m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match m {
        Mutation::FlipBit(i, bit) => bytes[i.index(n)] ^= 1 << bit,
        Mutation::SetByte(i, b) => bytes[i.index(n)] = *b,
        Mutation::Insert(i, b) => {
            let at = i.index(n + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Delete(i, len) => {
            let at = i.index(n);
            bytes.drain(at..(at + len).min(n));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(n)),
        Mutation::Length(i, v) => set_field(bytes, fields, FieldKind::Length, i, &v.to_le_bytes()),
        Mutation::Tag(i, v) => set_field(bytes, fields, FieldKind::Tag, i, &v.to_le_bytes()),
        Mutation::Float(i, v) => set_field(bytes, fields, FieldKind::F32, i, &v.to_le_bytes()),
        Mutation::Int(i, v) => set_field(bytes, fields, FieldKind::U32, i, &v.to_le_bytes()),
    }
}

/// Everything a load does with a header before reading tensor data.
fn read_and_validate(bytes: &[u8], file_len: u64) {
    let header = match GgufHeader::read(bytes, file_len, &GgufLimits::default()) {
        Ok(header) => header,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let md = header.metadata();
    if let Ok(config) = ModelConfig::from_metadata(md) {
        assert!(config.rms_norm_eps.is_finite() && config.rms_norm_eps > 0.0);
        assert!(config.rope_theta.is_finite() && config.rope_theta > 0.0);
        assert_eq!(config.n_heads * config.head_dim, config.hidden_size);
        assert_eq!(config.n_heads % config.n_kv_heads, 0);
    }
    if let Ok(tokenizer) = Tokenizer::from_gguf(md) {
        let _ = tokenizer.encode("Hello, world! <|im_start|>user", true);
    }
    if let Ok(template) = ChatTemplate::from_gguf(md) {
        let _ = template.render(&[ChatMessage::user("Hi")], true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Any mutation of the real header is read and validated to Ok or Err,
    /// never a panic; accepted configs have finite, positive floats and
    /// heads that divide the width.
    #[test]
    fn mutated_real_headers_never_panic(mutations in proptest::collection::vec(mutation(), 1..5)) {
        let seed = seed();
        let mut bytes = seed.bytes.clone();
        for m in &mutations {
            apply(&mut bytes, &seed.fields, m);
        }
        read_and_validate(&bytes, bytes.len() as u64 + seed.data_len);
    }
}

/// A whole, tiny llama model around the seed's metadata (width 64, one
/// block, 2,048 tokens, zero weights in Q8_0, Q4_1, Q4_0 and F32), so that
/// a mutated file can be loaded end to end and run in about a millisecond.
struct TinyModel {
    header: Vec<u8>,
    fields: Vec<Field>,
    data: Vec<u8>,
}

fn tiny_model() -> &'static TinyModel {
    static TINY: OnceLock<TinyModel> = OnceLock::new();
    TINY.get_or_init(|| {
        let (h, kv, ffn, vocab) = (64u64, 32u64, 128u64, SEED_TOKENS as u64);
        let mut header = seed_header();
        let u32_value = |v: u64| RawValue::Scalar(4, (v as u32).to_le_bytes().to_vec());
        for (key, v) in [
            ("llama.embedding_length", h),
            ("llama.feed_forward_length", ffn),
            ("llama.block_count", 1),
            ("llama.attention.head_count", 4),
            ("llama.attention.head_count_kv", 2),
            ("llama.rope.dimension_count", 16),
            ("llama.vocab_size", vocab),
            ("llama.context_length", 64),
        ] {
            *header.get_mut(key).unwrap() = u32_value(v);
        }
        // (name, GGUF dims innermost first, type id, bytes per 32 values)
        let tensors: [(&str, [u64; 2], u32, u64); 11] = [
            ("token_embd.weight", [h, vocab], 8, 34),
            ("blk.0.attn_norm.weight", [h, 1], 0, 128),
            ("blk.0.attn_q.weight", [h, h], 3, 20),
            ("blk.0.attn_k.weight", [h, kv], 3, 20),
            ("blk.0.attn_v.weight", [h, kv], 3, 20),
            ("blk.0.attn_output.weight", [h, h], 3, 20),
            ("blk.0.ffn_norm.weight", [h, 1], 0, 128),
            ("blk.0.ffn_gate.weight", [h, ffn], 2, 18),
            ("blk.0.ffn_up.weight", [h, ffn], 2, 18),
            ("blk.0.ffn_down.weight", [ffn, h], 2, 18),
            ("output_norm.weight", [h, 1], 0, 128),
        ];
        header.tensors.clear();
        let mut offset = 0;
        for (name, dims, type_id, block_bytes) in tensors {
            let dims = if dims[1] == 1 {
                vec![dims[0]]
            } else {
                dims.to_vec()
            };
            header.tensors.push(RawTensor {
                name: name.as_bytes().to_vec(),
                dims: dims.clone(),
                type_id,
                offset,
            });
            offset += (dims.iter().product::<u64>() / 32 * block_bytes).next_multiple_of(32);
        }
        let (bytes, fields) = header.encode(32);
        TinyModel {
            header: bytes,
            fields,
            data: vec![0; offset as usize],
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// A mutated tiny model file is loaded end to end and, when it loads,
    /// runs a token: `Ok` or `Err`, never a panic.
    #[test]
    fn mutated_tiny_models_load_or_fail_cleanly(
        mutations in proptest::collection::vec(mutation(), 1..4)
    ) {
        let tiny = tiny_model();
        let mut bytes = tiny.header.clone();
        for m in &mutations {
            apply(&mut bytes, &tiny.fields, m);
        }
        bytes.extend_from_slice(&tiny.data);
        let path = temp_file(&bytes);
        if let Ok(model) = LocalModel::load(&path) {
            use hypertensor_model::LanguageModel;
            let _ = model.session().forward(&[1]);
        }
    }
}

#[test]
fn the_unmutated_tiny_model_loads_and_runs() {
    use hypertensor_model::LanguageModel;
    let tiny = tiny_model();
    let path = temp_file(&[tiny.header.clone(), tiny.data.clone()].concat());
    let model = LocalModel::load(&path).unwrap();
    assert_eq!(model.session().forward(&[1]).unwrap().len(), SEED_TOKENS);
}
