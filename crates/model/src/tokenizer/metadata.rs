//! Typed access to the GGUF metadata keys the tokenizer reads, with errors
//! that name the key.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use super::error::{TokenizerError, TokenizerResult};

/// GGUF metadata as candle reads it (`gguf_file::Content::metadata`).
pub(crate) type Metadata = HashMap<String, Value>;

/// Metadata keys used by the tokenizer, as llama.cpp names them.
pub(crate) mod keys {
    pub(crate) const MODEL: &str = "tokenizer.ggml.model";
    pub(crate) const PRE: &str = "tokenizer.ggml.pre";
    pub(crate) const TOKENS: &str = "tokenizer.ggml.tokens";
    pub(crate) const SCORES: &str = "tokenizer.ggml.scores";
    pub(crate) const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub(crate) const MERGES: &str = "tokenizer.ggml.merges";
    pub(crate) const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub(crate) const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub(crate) const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    pub(crate) const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    pub(crate) const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    pub(crate) const EOM_ID: &str = "tokenizer.ggml.eom_token_id";
    pub(crate) const FIM_PAD_ID: &str = "tokenizer.ggml.fim_pad_token_id";
    pub(crate) const FIM_REP_ID: &str = "tokenizer.ggml.fim_rep_token_id";
    pub(crate) const FIM_SEP_ID: &str = "tokenizer.ggml.fim_sep_token_id";
    pub(crate) const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub(crate) const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub(crate) const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    pub(crate) const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// The GGUF type name of a value, for error messages.
pub(crate) fn type_name(value: &Value) -> String {
    match value {
        Value::U8(_) => "u8".into(),
        Value::I8(_) => "i8".into(),
        Value::U16(_) => "u16".into(),
        Value::I16(_) => "i16".into(),
        Value::U32(_) => "u32".into(),
        Value::I32(_) => "i32".into(),
        Value::U64(_) => "u64".into(),
        Value::I64(_) => "i64".into(),
        Value::F32(_) => "f32".into(),
        Value::F64(_) => "f64".into(),
        Value::Bool(_) => "bool".into(),
        Value::String(_) => "string".into(),
        Value::Array(items) => match items.first() {
            Some(first) => format!("array of {}", type_name(first)),
            None => "empty array".into(),
        },
    }
}

fn wrong_type(key: &str, expected: &'static str, value: &Value) -> TokenizerError {
    TokenizerError::WrongType {
        key: key.to_owned(),
        expected,
        found: type_name(value),
    }
}

fn required<'a>(metadata: &'a Metadata, key: &str) -> TokenizerResult<&'a Value> {
    metadata.get(key).ok_or_else(|| TokenizerError::MissingKey {
        key: key.to_owned(),
    })
}

/// A required string value.
pub(crate) fn string<'a>(metadata: &'a Metadata, key: &str) -> TokenizerResult<&'a str> {
    optional_string(metadata, key)?.ok_or_else(|| TokenizerError::MissingKey {
        key: key.to_owned(),
    })
}

/// An optional string value; present with another type is an error.
pub(crate) fn optional_string<'a>(
    metadata: &'a Metadata,
    key: &str,
) -> TokenizerResult<Option<&'a str>> {
    match metadata.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(key, "string", other)),
    }
}

/// An optional boolean value; present with another type is an error.
pub(crate) fn optional_bool(metadata: &Metadata, key: &str) -> TokenizerResult<Option<bool>> {
    match metadata.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(key, "bool", other)),
    }
}

/// An optional token id: any non-negative integer type fitting in `u32`.
pub(crate) fn optional_id(metadata: &Metadata, key: &str) -> TokenizerResult<Option<u32>> {
    let Some(value) = metadata.get(key) else {
        return Ok(None);
    };
    let id: Option<u64> = match *value {
        Value::U8(v) => Some(v.into()),
        Value::U16(v) => Some(v.into()),
        Value::U32(v) => Some(v.into()),
        Value::U64(v) => Some(v),
        Value::I8(v) => u64::try_from(v).ok(),
        Value::I16(v) => u64::try_from(v).ok(),
        Value::I32(v) => u64::try_from(v).ok(),
        Value::I64(v) => u64::try_from(v).ok(),
        _ => return Err(wrong_type(key, "unsigned integer", value)),
    };
    match id.and_then(|id| u32::try_from(id).ok()) {
        Some(id) => Ok(Some(id)),
        None => Err(TokenizerError::InvalidMetadata {
            key: key.to_owned(),
            reason: "token id is negative or does not fit in 32 bits".into(),
        }),
    }
}

fn array<'a>(value: &'a Value, key: &str, expected: &'static str) -> TokenizerResult<&'a [Value]> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(wrong_type(key, expected, other)),
    }
}

/// A required array of strings.
pub(crate) fn string_array<'a>(metadata: &'a Metadata, key: &str) -> TokenizerResult<Vec<&'a str>> {
    let items = array(required(metadata, key)?, key, "array of string")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.as_str()),
            other => Err(wrong_type(&format!("{key}[{i}]"), "string", other)),
        })
        .collect()
}

/// An optional array of numbers read as `f32` (llama.cpp accepts f32 or i32 scores).
pub(crate) fn optional_f32_array(
    metadata: &Metadata,
    key: &str,
) -> TokenizerResult<Option<Vec<f32>>> {
    let Some(value) = metadata.get(key) else {
        return Ok(None);
    };
    let items = array(value, key, "array of f32")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match *item {
            Value::F32(v) => Ok(v),
            Value::I32(v) => Ok(v as f32),
            ref other => Err(wrong_type(&format!("{key}[{i}]"), "f32", other)),
        })
        .collect::<TokenizerResult<Vec<f32>>>()
        .map(Some)
}

/// An optional array of `i32`.
pub(crate) fn optional_i32_array(
    metadata: &Metadata,
    key: &str,
) -> TokenizerResult<Option<Vec<i32>>> {
    let Some(value) = metadata.get(key) else {
        return Ok(None);
    };
    let items = array(value, key, "array of i32")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match *item {
            Value::I32(v) => Ok(v),
            ref other => Err(wrong_type(&format!("{key}[{i}]"), "i32", other)),
        })
        .collect::<TokenizerResult<Vec<i32>>>()
        .map(Some)
}
