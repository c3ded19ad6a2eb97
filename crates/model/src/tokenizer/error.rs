//! The one error type of the tokenizer and chat-template module.

use thiserror::Error;

/// Result alias for tokenizer and chat-template operations.
pub type TokenizerResult<T> = std::result::Result<T, TokenizerError>;

/// Everything that can go wrong while building a tokenizer or chat template
/// from GGUF metadata, encoding, decoding or rendering.
#[derive(Debug, Error)]
pub enum TokenizerError {
    /// A metadata key the tokenizer needs is absent from the GGUF.
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey {
        /// The absent key.
        key: String,
    },

    /// A metadata key holds a value of the wrong type.
    #[error("GGUF metadata key `{key}` has type {found}, expected {expected}")]
    WrongType {
        /// The offending key (with `[index]` for an array element).
        key: String,
        /// The type the tokenizer needs.
        expected: &'static str,
        /// The type the file holds.
        found: String,
    },

    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error(
        "unsupported tokenizer model `{model}` in `tokenizer.ggml.model` (supported: \"gpt2\", \"llama\")"
    )]
    UnsupportedModel {
        /// The model name found in the file.
        model: String,
    },

    /// `tokenizer.ggml.pre` names a pre-tokenizer this crate does not implement.
    #[error("unsupported pre-tokenizer `{pre}` in `tokenizer.ggml.pre`")]
    UnsupportedPreTokenizer {
        /// The pre-tokenizer name found in the file.
        pre: String,
    },

    /// The vocabulary metadata is inconsistent (lengths, duplicates, ids).
    #[error("invalid tokenizer metadata `{key}`: {reason}")]
    InvalidMetadata {
        /// The key whose value is inconsistent.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A token id outside the vocabulary was given to decode.
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    TokenIdOutOfRange {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },

    /// The pre-tokenizer regex failed on an input (e.g. backtrack limit).
    #[error("pre-tokenizer regex failed: {0}")]
    Regex(#[from] Box<fancy_regex::Error>),

    /// The chat template failed to parse or to render.
    #[error("chat template error: {message}")]
    Template {
        /// The template engine's description, including the line when known.
        message: String,
    },
}

impl From<minijinja::Error> for TokenizerError {
    fn from(error: minijinja::Error) -> Self {
        // Display already carries the kind, the detail and `(in chat_template:LINE)`;
        // append the causes (e.g. an error raised inside a filter).
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        TokenizerError::Template { message }
    }
}
