//! Hyper-parameters of a Llama-family model, read from GGUF metadata.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use crate::error::{ModelError, Result};

/// Widest residual stream accepted (`llama.embedding_length`); the largest
/// published llama-family models use 16,384.
pub const MAX_HIDDEN_SIZE: usize = 1 << 16;
/// Widest MLP accepted (`llama.feed_forward_length`).
pub const MAX_INTERMEDIATE_SIZE: usize = 1 << 18;
/// Most transformer blocks accepted (`llama.block_count`).
pub const MAX_BLOCKS: usize = 1 << 10;
/// Largest vocabulary accepted (published vocabularies reach 256k).
pub const MAX_VOCAB_SIZE: usize = 1 << 21;
/// Longest context accepted (`llama.context_length`); caches are sized by it.
pub const MAX_CONTEXT_LENGTH: usize = 1 << 24;

/// The shape of a Llama-family transformer, as the GGUF metadata declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Width of the residual stream (`llama.embedding_length`).
    pub hidden_size: usize,
    /// Width of the gated MLP (`llama.feed_forward_length`).
    pub intermediate_size: usize,
    /// Number of transformer blocks (`llama.block_count`).
    pub n_blocks: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads (grouped-query attention when smaller).
    pub n_kv_heads: usize,
    /// Dimension of one attention head.
    pub head_dim: usize,
    /// RoPE frequency base.
    pub rope_theta: f32,
    /// Epsilon of the RMS norms.
    pub rms_norm_eps: f32,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum number of positions the model was trained for.
    pub context_length: usize,
}

impl LlamaConfig {
    /// Reads the configuration from GGUF metadata, checking the architecture.
    pub fn from_metadata(md: &HashMap<String, Value>) -> Result<Self> {
        let arch = metadata_string(md, "general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::UnsupportedArchitecture(arch.to_string()));
        }
        let hidden_size = metadata_usize(md, "llama.embedding_length")?;
        let n_heads = metadata_usize(md, "llama.attention.head_count")?;
        let n_kv_heads = match md.get("llama.attention.head_count_kv") {
            Some(_) => metadata_usize(md, "llama.attention.head_count_kv")?,
            None => n_heads,
        };
        if n_heads == 0
            || n_kv_heads == 0
            || hidden_size % n_heads != 0
            || n_heads % n_kv_heads != 0
        {
            return Err(ModelError::Metadata {
                key: "llama.attention.head_count".into(),
                problem: format!(
                    "{n_heads} heads and {n_kv_heads} kv heads do not divide a width of {hidden_size}"
                ),
            });
        }
        let head_dim = hidden_size / n_heads;
        if head_dim % 2 != 0 {
            return Err(ModelError::Metadata {
                key: "llama.embedding_length".into(),
                problem: format!("head dimension {head_dim} is odd; RoPE needs pairs"),
            });
        }
        if let Some(v) = md.get("llama.rope.dimension_count") {
            let rope_dim = value_usize("llama.rope.dimension_count", v)?;
            if rope_dim != head_dim {
                return Err(ModelError::Metadata {
                    key: "llama.rope.dimension_count".into(),
                    problem: format!("partial RoPE ({rope_dim} of {head_dim}) is not supported"),
                });
            }
        }
        let vocab_size = match md.get("llama.vocab_size") {
            Some(v) => value_usize("llama.vocab_size", v)?,
            None => match md.get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens.len(),
                _ => {
                    return Err(ModelError::Metadata {
                        key: "llama.vocab_size".into(),
                        problem: "missing, and no tokenizer.ggml.tokens to count".into(),
                    });
                }
            },
        };
        let config = Self {
            hidden_size,
            intermediate_size: metadata_usize(md, "llama.feed_forward_length")?,
            n_blocks: metadata_usize(md, "llama.block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_theta: match md.get("llama.rope.freq_base") {
                Some(v) => value_f32("llama.rope.freq_base", v)?,
                None => 10_000.0,
            },
            rms_norm_eps: metadata_f32(md, "llama.attention.layer_norm_rms_epsilon")?,
            vocab_size,
            context_length: match md.get("llama.context_length") {
                Some(v) => value_usize("llama.context_length", v)?,
                None => 2048,
            },
        };
        config.check_ranges()?;
        Ok(config)
    }

    /// Every size is at least 1 and at most its `MAX_*` bound, and the
    /// floats are finite and positive (an epsilon of at most 1): a value
    /// outside these ranges is a corrupt file, which would otherwise load
    /// and then produce NaNs or nothing.
    fn check_ranges(&self) -> Result<()> {
        let sizes = [
            ("llama.embedding_length", self.hidden_size, MAX_HIDDEN_SIZE),
            (
                "llama.feed_forward_length",
                self.intermediate_size,
                MAX_INTERMEDIATE_SIZE,
            ),
            ("llama.block_count", self.n_blocks, MAX_BLOCKS),
            ("llama.vocab_size", self.vocab_size, MAX_VOCAB_SIZE),
            (
                "llama.context_length",
                self.context_length,
                MAX_CONTEXT_LENGTH,
            ),
        ];
        for (key, value, max) in sizes {
            if !(1..=max).contains(&value) {
                return Err(ModelError::Metadata {
                    key: key.into(),
                    problem: format!("{value} is outside 1..={max}"),
                });
            }
        }
        let floats = [
            ("llama.rope.freq_base", self.rope_theta, f32::MAX),
            (
                "llama.attention.layer_norm_rms_epsilon",
                self.rms_norm_eps,
                1.0,
            ),
        ];
        for (key, value, max) in floats {
            if !(value.is_finite() && value > 0.0 && value <= max) {
                return Err(ModelError::Metadata {
                    key: key.into(),
                    problem: format!("{value} is not a finite number in (0, {max}]"),
                });
            }
        }
        Ok(())
    }

    /// Width of the key and value projections.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

fn missing(key: &str) -> ModelError {
    ModelError::Metadata {
        key: key.to_string(),
        problem: "missing".into(),
    }
}

fn wrong_type(key: &str, expected: &str, got: &Value) -> ModelError {
    ModelError::Metadata {
        key: key.to_string(),
        problem: format!("expected {expected}, found {:?}", got.value_type()),
    }
}

/// Reads a string-valued metadata key.
pub(crate) fn metadata_string<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a str> {
    match md.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong_type(key, "a string", other)),
        None => Err(missing(key)),
    }
}

fn metadata_usize(md: &HashMap<String, Value>, key: &str) -> Result<usize> {
    value_usize(key, md.get(key).ok_or_else(|| missing(key))?)
}

fn metadata_f32(md: &HashMap<String, Value>, key: &str) -> Result<f32> {
    value_f32(key, md.get(key).ok_or_else(|| missing(key))?)
}

fn value_usize(key: &str, v: &Value) -> Result<usize> {
    let n: u64 = match v {
        Value::U8(x) => u64::from(*x),
        Value::U16(x) => u64::from(*x),
        Value::U32(x) => u64::from(*x),
        Value::U64(x) => *x,
        Value::I8(x) if *x >= 0 => *x as u64,
        Value::I16(x) if *x >= 0 => *x as u64,
        Value::I32(x) if *x >= 0 => *x as u64,
        Value::I64(x) if *x >= 0 => *x as u64,
        other => return Err(wrong_type(key, "a non-negative integer", other)),
    };
    usize::try_from(n).map_err(|_| ModelError::Metadata {
        key: key.to_string(),
        problem: format!("{n} does not fit in memory"),
    })
}

fn value_f32(key: &str, v: &Value) -> Result<f32> {
    match v {
        Value::F32(x) => Ok(*x),
        Value::F64(x) => Ok(*x as f32),
        other => Err(wrong_type(key, "a float", other)),
    }
}
