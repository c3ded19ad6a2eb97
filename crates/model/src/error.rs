//! The model crate's error type.

use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::tokenizer::TokenizerError;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file could not be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a well-formed GGUF file (bad magic, truncated,
    /// corrupt, or declaring more than the limits allow).
    ///
    /// The problem is part of the message (not a separate `source`), so an
    /// error chain prints it once.
    #[error("{path} is not a valid GGUF file: {problem}")]
    InvalidGguf {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        problem: GgufError,
    },
    /// The GGUF describes a model architecture this engine does not run.
    #[error("unsupported model architecture `{0}`: only the llama family is supported")]
    UnsupportedArchitecture(String),
    /// A metadata key the engine needs is missing or has the wrong type.
    #[error("GGUF metadata key `{key}`: {problem}")]
    Metadata {
        /// The metadata key.
        key: String,
        /// Missing, or which type was expected.
        problem: String,
    },
    /// A tensor the engine needs is missing or has an unexpected shape or type.
    #[error("tensor `{name}`: {problem}")]
    Tensor {
        /// The GGUF tensor name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A requested block range does not fit the model.
    #[error("invalid block span {start}..{end}: the model has {n_blocks} blocks")]
    InvalidSpan {
        /// First block of the requested span.
        start: usize,
        /// One past the last block of the requested span.
        end: usize,
        /// Number of transformer blocks in the model.
        n_blocks: usize,
    },
    /// The input does not fit the context window.
    #[error(
        "context length exceeded: {requested} tokens requested, the model's context holds {limit}"
    )]
    ContextOverflow {
        /// Tokens the cache would have to hold.
        requested: usize,
        /// The model's context length.
        limit: usize,
    },
    /// Hidden states or token ids of the wrong shape or range.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The logits hold no finite value to sample from (every one NaN or
    /// infinite): the numbers feeding the head went wrong. Not the
    /// caller's fault.
    #[error("no finite logit among {len} to sample from")]
    NonFiniteLogits {
        /// Number of logits given.
        len: usize,
    },
    /// The transformer blocks run elsewhere (a swarm of servers) and that
    /// backend cannot serve the step now: no route covers the blocks, or
    /// every server tried failed. Neither the caller's fault nor the
    /// engine's; the source is the backend's own typed error.
    #[error(transparent)]
    Unavailable(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A tokenizer or chat-template failure.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// An internal numeric failure reported by candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for the model crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
