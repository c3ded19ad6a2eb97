//! Hyper-parameters of a transformer (Llama, Qwen 2, Gemma 3), read from
//! GGUF metadata.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use crate::error::{ModelError, Result};

/// Widest residual stream accepted (`<arch>.embedding_length`); the largest
/// published llama-family models use 16,384.
pub const MAX_HIDDEN_SIZE: usize = 1 << 16;
/// Widest MLP accepted (`<arch>.feed_forward_length`).
pub const MAX_INTERMEDIATE_SIZE: usize = 1 << 18;
/// Most transformer blocks accepted (`<arch>.block_count`).
pub const MAX_BLOCKS: usize = 1 << 10;
/// Largest vocabulary accepted (published vocabularies reach 256k).
pub const MAX_VOCAB_SIZE: usize = 1 << 21;
/// Longest context accepted (`<arch>.context_length`); caches are sized by it.
pub const MAX_CONTEXT_LENGTH: usize = 1 << 24;

/// The transformer families this engine runs (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 1-3, SmolLM2, TinyLlama, Mistral: pre-norm GQA with SiLU-gated
    /// MLP; llama.cpp's conversion permutes Q and K for adjacent-pair RoPE.
    Llama,
    /// Qwen 2 and 2.5: Llama's shape with biases on Q, K and V and RoPE on
    /// the two halves of each head.
    Qwen2,
    /// Gemma 3: scaled embeddings, GELU-gated MLP, norms after attention and
    /// MLP as well as before, RMS-normed queries and keys, and sliding-window
    /// layers with their own RoPE base between global ones.
    Gemma3,
}

impl Architecture {
    /// The metadata name, also the prefix of the architecture's keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// Which pairs of a head's dimensions RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// `(x[2i], x[2i+1])`: llama.cpp's layout for Llama models.
    Adjacent,
    /// `(x[i], x[i + d/2])`: the original ("NeoX") layout, Qwen 2 and Gemma.
    Halves,
}

/// The activation of the gated MLP: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (SwiGLU).
    Silu,
    /// GELU, tanh approximation (GeGLU).
    GeluTanh,
}

/// Local attention layers: each position sees only the last `size`
/// positions (itself included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlidingWindow {
    /// Positions a local layer sees.
    pub size: usize,
    /// Every `period`-th layer (the last of each period) is global.
    pub period: usize,
    /// The RoPE base of local layers.
    pub rope_theta: f32,
}

/// The shape of a transformer, as the GGUF metadata declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The family, which decides the block's wiring.
    pub architecture: Architecture,
    /// Width of the residual stream (`<arch>.embedding_length`).
    pub hidden_size: usize,
    /// Width of the gated MLP (`<arch>.feed_forward_length`).
    pub intermediate_size: usize,
    /// Number of transformer blocks (`<arch>.block_count`).
    pub n_blocks: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads (grouped-query attention when smaller).
    pub n_kv_heads: usize,
    /// Dimension of one attention head (`<arch>.attention.key_length`, else
    /// the width over the heads).
    pub head_dim: usize,
    /// RoPE frequency base (of global layers, where layers differ).
    pub rope_theta: f32,
    /// Linear RoPE scaling: positions are divided by this factor (1 for none).
    pub rope_scale: f32,
    /// Which dimensions RoPE pairs.
    pub rope_layout: RopeLayout,
    /// Local attention layers, if the model has them.
    pub sliding_window: Option<SlidingWindow>,
    /// Factor applied to embeddings as they are looked up (Gemma: the
    /// square root of the width).
    pub embedding_scale: Option<f32>,
    /// The MLP's activation.
    pub activation: Activation,
    /// Epsilon of the RMS norms.
    pub rms_norm_eps: f32,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum number of positions the model was trained for.
    pub context_length: usize,
}

impl ModelConfig {
    /// Reads the configuration from GGUF metadata, checking the architecture.
    pub fn from_metadata(md: &HashMap<String, Value>) -> Result<Self> {
        let arch = metadata_string(md, "general.architecture")?;
        let architecture = match arch {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "gemma3" => Architecture::Gemma3,
            _ => return Err(ModelError::UnsupportedArchitecture(arch.to_string())),
        };
        let key = |name: &str| format!("{arch}.{name}");
        let usize_key = |name: &str| metadata_usize(md, &key(name));
        let optional_usize = |name: &str| -> Result<Option<usize>> {
            md.get(&key(name))
                .map(|v| value_usize(&key(name), v))
                .transpose()
        };
        let optional_f32 = |name: &str| -> Result<Option<f32>> {
            md.get(&key(name))
                .map(|v| value_f32(&key(name), v))
                .transpose()
        };
        let hidden_size = usize_key("embedding_length")?;
        let n_heads = usize_key("attention.head_count")?;
        let n_kv_heads = optional_usize("attention.head_count_kv")?.unwrap_or(n_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(ModelError::Metadata {
                key: key("attention.head_count"),
                problem: format!("{n_kv_heads} kv heads do not divide {n_heads} heads"),
            });
        }
        let head_dim = match optional_usize("attention.key_length")? {
            Some(d) => d,
            None if hidden_size % n_heads == 0 => hidden_size / n_heads,
            None => {
                return Err(ModelError::Metadata {
                    key: key("attention.head_count"),
                    problem: format!("{n_heads} heads do not divide a width of {hidden_size}"),
                });
            }
        };
        if let Some(value_dim) = optional_usize("attention.value_length")?
            && value_dim != head_dim
        {
            return Err(ModelError::Metadata {
                key: key("attention.value_length"),
                problem: format!("{value_dim} differs from the key length {head_dim}"),
            });
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ModelError::Metadata {
                key: key("attention.key_length"),
                problem: format!("head dimension {head_dim} is not even; RoPE needs pairs"),
            });
        }
        if let Some(rope_dim) = optional_usize("rope.dimension_count")?
            && rope_dim != head_dim
        {
            return Err(ModelError::Metadata {
                key: key("rope.dimension_count"),
                problem: format!("partial RoPE ({rope_dim} of {head_dim}) is not supported"),
            });
        }
        let vocab_size = match optional_usize("vocab_size")? {
            Some(v) => v,
            None => match md.get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens.len(),
                _ => {
                    return Err(ModelError::Metadata {
                        key: key("vocab_size"),
                        problem: "missing, and no tokenizer.ggml.tokens to count".into(),
                    });
                }
            },
        };
        let rope_scale = match md.get(&key("rope.scaling.type")) {
            None => 1.0,
            Some(Value::String(kind)) if kind == "none" => 1.0,
            Some(Value::String(kind)) if kind == "linear" => {
                optional_f32("rope.scaling.factor")?
                    .ok_or_else(|| missing(&key("rope.scaling.factor")))?
            }
            Some(Value::String(kind)) => {
                return Err(ModelError::Metadata {
                    key: key("rope.scaling.type"),
                    problem: format!("RoPE scaling `{kind}` is not supported (linear is)"),
                });
            }
            Some(other) => return Err(wrong_type(&key("rope.scaling.type"), "a string", other)),
        };
        let gemma = architecture == Architecture::Gemma3;
        // Gemma 3 alternates local and global layers; a file without the
        // window size is not one llama.cpp would load either.
        let sliding_window = if gemma {
            Some(SlidingWindow {
                size: usize_key("attention.sliding_window")?,
                // llama.cpp: five local layers, then a global one.
                period: 6,
                rope_theta: 10_000.0,
            })
        } else {
            None
        };
        let config = Self {
            architecture,
            hidden_size,
            intermediate_size: usize_key("feed_forward_length")?,
            n_blocks: usize_key("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_theta: optional_f32("rope.freq_base")?.unwrap_or(10_000.0),
            rope_scale,
            rope_layout: match architecture {
                Architecture::Llama => RopeLayout::Adjacent,
                Architecture::Qwen2 | Architecture::Gemma3 => RopeLayout::Halves,
            },
            sliding_window,
            embedding_scale: gemma.then(|| (hidden_size as f32).sqrt()),
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            rms_norm_eps: metadata_f32(md, &key("attention.layer_norm_rms_epsilon"))?,
            vocab_size,
            context_length: optional_usize("context_length")?.unwrap_or(2048),
        };
        config.check_ranges()?;
        Ok(config)
    }

    /// Every size is at least 1 and at most its `MAX_*` bound, and the
    /// floats are finite and positive (an epsilon of at most 1): a value
    /// outside these ranges is a corrupt file, which would otherwise load
    /// and then produce NaNs or nothing.
    fn check_ranges(&self) -> Result<()> {
        let arch = self.architecture.name();
        let key = |name: &str| format!("{arch}.{name}");
        let sizes = [
            (key("embedding_length"), self.hidden_size, MAX_HIDDEN_SIZE),
            (
                key("feed_forward_length"),
                self.intermediate_size,
                MAX_INTERMEDIATE_SIZE,
            ),
            (key("block_count"), self.n_blocks, MAX_BLOCKS),
            (key("attention.key_length"), self.head_dim, MAX_HIDDEN_SIZE),
            (
                key("attention.head_count"),
                self.n_heads * self.head_dim,
                MAX_HIDDEN_SIZE,
            ),
            (key("vocab_size"), self.vocab_size, MAX_VOCAB_SIZE),
            (
                key("context_length"),
                self.context_length,
                MAX_CONTEXT_LENGTH,
            ),
            (
                key("attention.sliding_window"),
                self.sliding_window.map_or(1, |w| w.size),
                MAX_CONTEXT_LENGTH,
            ),
        ];
        for (key, value, max) in sizes {
            if !(1..=max).contains(&value) {
                return Err(ModelError::Metadata {
                    key,
                    problem: format!("{value} is outside 1..={max}"),
                });
            }
        }
        let floats = [
            (key("rope.freq_base"), self.rope_theta, f32::MAX),
            (key("rope.scaling.factor"), self.rope_scale, f32::MAX),
            (
                key("attention.layer_norm_rms_epsilon"),
                self.rms_norm_eps,
                1.0,
            ),
        ];
        for (key, value, max) in floats {
            if !(value.is_finite() && value > 0.0 && value <= max) {
                return Err(ModelError::Metadata {
                    key,
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

    /// Width of the query projection (and the attention output).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// The sliding window block `layer` attends within, or None for a
    /// global layer.
    pub fn window_of(&self, layer: usize) -> Option<usize> {
        self.sliding_window
            .filter(|w| w.period == 0 || layer % w.period != w.period - 1)
            .map(|w| w.size)
    }

    /// The RoPE base of block `layer`.
    pub fn rope_theta_of(&self, layer: usize) -> f32 {
        match (self.window_of(layer), self.sliding_window) {
            (Some(_), Some(w)) => w.rope_theta,
            _ => self.rope_theta,
        }
    }

    /// The linear RoPE scaling of block `layer` (local layers are unscaled).
    pub fn rope_scale_of(&self, layer: usize) -> f32 {
        if self.window_of(layer).is_some() {
            1.0
        } else {
            self.rope_scale
        }
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
