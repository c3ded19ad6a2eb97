//! GGUF Llama-family model engine.
//!
//! # Bird's-eye view
//!
//! A model is split into parts that load and run alone, so a server can hold
//! only some blocks and a client only the ends:
//!
//! * [`Embedding`]: token ids to hidden states (`token_embd.weight`);
//! * [`BlockSpan`]: any contiguous range of transformer blocks, with a
//!   [`SpanCache`] of keys and values per sequence;
//! * [`Head`]: final norm and projection to logits (tied to the embedding
//!   table when the file has no `output.weight`).
//!
//! Running spans `0..a`, `a..b`, `b..n` in sequence is exactly running the
//! whole model: the blocks are the same code on the same weights.
//!
//! Weights stay in their GGUF quantized formats and are multiplied by
//! 8-bit-quantized activations in [`kernels`]; [`GgufFile`] reads tensors
//! one at a time, on demand. Tokenization and chat templates come from the
//! file's metadata ([`tokenizer`]); sampling and the generation loop are kept
//! apart from the model ([`sampling`], [`generate`]).

pub mod batch;
mod block;
pub mod config;
mod dense;
mod embedding;
pub mod error;
pub mod generate;
pub mod gguf;
mod head;
mod hidden;
pub mod kernels;
mod layers;
mod model;
mod pool;
pub mod prompt;
pub mod sampling;
mod span;
pub mod tokenizer;
pub mod tune;

pub use batch::{
    BATCH_SIZE_BOUNDS, BatchConfig, BatchStats, Batcher, HeadBatcher, OpenSequence, StepOutput,
};
pub use block::KvCache;
pub use config::{Activation, Architecture, ModelConfig, RopeLayout, SlidingWindow};
pub use embedding::Embedding;
pub use error::{ModelError, Result};
pub use generate::{FinishReason, Flow, Generation, GenerationRequest, generate};
pub use gguf::GgufFile;
pub use head::Head;
pub use hidden::HiddenStates;
pub use kernels::{Precision, WeightFormat};
pub use model::{BatchedModel, BatchedSession, LanguageModel, LocalModel, LocalSession};
pub use prompt::{DeepPrompts, PromptTuning};
pub use sampling::{Sampler, SamplingParams};
pub use span::{BlockSpan, SpanCache, SpanGradients, SpanTape, TrainingWeights};
pub use tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
