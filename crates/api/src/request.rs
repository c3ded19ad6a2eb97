//! Parsing and checking request bodies: every field is either understood
//! or refused by name, never silently ignored.

use hypertensor_model::{ChatMessage, SamplingParams};
use serde_json::{Map, Value};

use crate::error::{ApiError, Result};

/// Most stop strings per request (OpenAI's limit).
const MAX_STOPS: usize = 4;
/// Tokens a completion produces when `max_tokens` is absent (OpenAI's
/// default for `/v1/completions`).
const DEFAULT_COMPLETION_TOKENS: usize = 16;

/// What both endpoints share, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub(crate) model: String,
    /// The most tokens to generate: the caller's `max_tokens`, else the
    /// endpoint's default (16 for completions, as OpenAI; for chat the
    /// server's `chat_default_max_tokens`, fitted to the context).
    pub(crate) max_tokens: usize,
    /// Whether the caller set `max_tokens` (then a value beyond the
    /// context is refused rather than fitted).
    pub(crate) max_tokens_explicit: bool,
    pub(crate) sampling: SamplingParams,
    pub(crate) stop: Vec<String>,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
}

/// A parsed `/v1/completions` body.
#[derive(Debug, Clone)]
pub(crate) struct CompletionRequest {
    pub(crate) common: Common,
    pub(crate) prompt: String,
}

/// A parsed `/v1/chat/completions` body.
#[derive(Debug, Clone)]
pub(crate) struct ChatRequest {
    pub(crate) common: Common,
    pub(crate) messages: Vec<ChatMessage>,
}

const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "user",
    "presence_penalty",
    "frequency_penalty",
];

fn object(body: Value) -> Result<Map<String, Value>> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::BadRequest {
            message: "the request body must be a JSON object".into(),
            param: None,
        }),
    }
}

fn refuse_unknown(map: &Map<String, Value>, extra: &[&str]) -> Result<()> {
    for key in map.keys() {
        if !COMMON_FIELDS.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
            return Err(ApiError::bad_param(
                key,
                format!("unsupported option `{key}`"),
            ));
        }
    }
    Ok(())
}

/// The field's value unless absent or null.
fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|v| !v.is_null())
}

fn number(map: &Map<String, Value>, name: &str) -> Result<Option<f64>> {
    field(map, name)
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| ApiError::bad_param(name, format!("`{name}` must be a number")))
        })
        .transpose()
}

fn integer(map: &Map<String, Value>, name: &str) -> Result<Option<u64>> {
    field(map, name)
        .map(|v| {
            v.as_u64().ok_or_else(|| {
                ApiError::bad_param(name, format!("`{name}` must be a non-negative integer"))
            })
        })
        .transpose()
}

fn boolean(map: &Map<String, Value>, name: &str) -> Result<bool> {
    match field(map, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_param(
            name,
            format!("`{name}` must be a boolean"),
        )),
    }
}

fn stops(map: &Map<String, Value>) -> Result<Vec<String>> {
    let bad = || ApiError::bad_param("stop", "`stop` must be a string or an array of strings");
    let stops = match field(map, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Result<Vec<_>>>()?,
        Some(_) => return Err(bad()),
    };
    if stops.len() > MAX_STOPS {
        return Err(ApiError::bad_param(
            "stop",
            format!(
                "at most {MAX_STOPS} stop strings are allowed, got {}",
                stops.len()
            ),
        ));
    }
    Ok(stops)
}

fn common(
    map: &Map<String, Value>,
    max_tokens_fields: &[&str],
    default_max: usize,
) -> Result<Common> {
    let model = match field(map, "model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(ApiError::bad_param("model", "`model` must be a string")),
        None => return Err(ApiError::bad_param("model", "`model` is required")),
    };
    if let Some(n) = integer(map, "n")?
        && n != 1
    {
        return Err(ApiError::bad_param(
            "n",
            format!("only n = 1 is supported, got {n}"),
        ));
    }
    for name in ["presence_penalty", "frequency_penalty"] {
        if let Some(p) = number(map, name)?
            && p != 0.0
        {
            return Err(ApiError::bad_param(
                name,
                format!("`{name}` is not supported (only 0 is accepted)"),
            ));
        }
    }
    if let Some(v) = field(map, "user")
        && !v.is_string()
    {
        return Err(ApiError::bad_param("user", "`user` must be a string"));
    }
    let mut max_tokens = default_max;
    let mut max_tokens_explicit = false;
    for name in max_tokens_fields {
        if let Some(n) = integer(map, name)? {
            if n == 0 {
                return Err(ApiError::bad_param(
                    name,
                    format!("`{name}` must be at least 1, got 0"),
                ));
            }
            max_tokens = usize::try_from(n).unwrap_or(usize::MAX);
            max_tokens_explicit = true;
        }
    }
    let temperature = number(map, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_param(
            "temperature",
            format!("`temperature` must be between 0 and 2, got {temperature}"),
        ));
    }
    let top_p = number(map, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_param(
            "top_p",
            format!("`top_p` must be in (0, 1], got {top_p}"),
        ));
    }
    let seed = match field(map, "seed") {
        None => rand::random(),
        Some(v) => v
            .as_i64()
            .map(|s| s as u64)
            .or_else(|| v.as_u64())
            .ok_or_else(|| ApiError::bad_param("seed", "`seed` must be an integer"))?,
    };
    let stream = boolean(map, "stream")?;
    let include_usage = match field(map, "stream_options") {
        None => false,
        Some(Value::Object(opts)) => {
            refuse_nested(opts, "stream_options", &["include_usage"])?;
            boolean(opts, "include_usage")?
        }
        Some(_) => {
            return Err(ApiError::bad_param(
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    };
    if include_usage && !stream {
        return Err(ApiError::bad_param(
            "stream_options",
            "`stream_options` is only allowed with `stream: true`",
        ));
    }
    Ok(Common {
        model,
        max_tokens,
        max_tokens_explicit,
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_k: None,
            top_p: (top_p < 1.0).then_some(top_p as f32),
            seed,
        },
        stop: stops(map)?,
        stream,
        include_usage,
    })
}

fn refuse_nested(map: &Map<String, Value>, parent: &str, allowed: &[&str]) -> Result<()> {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            let name = format!("{parent}.{key}");
            return Err(ApiError::bad_param(
                &name,
                format!("unsupported option `{name}`"),
            ));
        }
    }
    Ok(())
}

impl CompletionRequest {
    /// Parses a `/v1/completions` body.
    pub(crate) fn parse(body: Value) -> Result<Self> {
        let map = object(body)?;
        refuse_unknown(&map, &["prompt"])?;
        let bad = || {
            ApiError::bad_param(
                "prompt",
                "`prompt` must be a string or an array of one string",
            )
        };
        let prompt = match field(&map, "prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) if items.len() == 1 => {
                items[0].as_str().ok_or_else(bad)?.to_string()
            }
            Some(_) => return Err(bad()),
            None => return Err(ApiError::bad_param("prompt", "`prompt` is required")),
        };
        let common = common(&map, &["max_tokens"], DEFAULT_COMPLETION_TOKENS)?;
        Ok(Self { common, prompt })
    }
}

impl ChatRequest {
    /// Parses a `/v1/chat/completions` body; `default_max` is the
    /// completion budget when the body gives none.
    pub(crate) fn parse(body: Value, default_max: usize) -> Result<Self> {
        let map = object(body)?;
        refuse_unknown(&map, &["messages", "max_completion_tokens"])?;
        let items = match field(&map, "messages") {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(_) => {
                return Err(ApiError::bad_param(
                    "messages",
                    "`messages` must be a non-empty array",
                ));
            }
            None => return Err(ApiError::bad_param("messages", "`messages` is required")),
        };
        let messages = items
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>>>()?;
        let common = common(&map, &["max_tokens", "max_completion_tokens"], default_max)?;
        Ok(Self { common, messages })
    }
}

fn message(i: usize, value: &Value) -> Result<ChatMessage> {
    let param = format!("messages[{i}]");
    let Value::Object(m) = value else {
        return Err(ApiError::bad_param(
            &param,
            format!("`{param}` must be an object"),
        ));
    };
    for key in m.keys() {
        if !["role", "content", "name"].contains(&key.as_str()) {
            let name = format!("{param}.{key}");
            return Err(ApiError::bad_param(
                &name,
                format!("unsupported option `{name}`"),
            ));
        }
    }
    let role = match m.get("role") {
        Some(Value::String(r))
            if ["system", "user", "assistant", "developer"].contains(&r.as_str()) =>
        {
            if r == "developer" {
                "system".to_string()
            } else {
                r.clone()
            }
        }
        _ => {
            return Err(ApiError::bad_param(
                &format!("{param}.role"),
                format!("`{param}.role` must be one of system, developer, user, assistant"),
            ));
        }
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::bad_param(
                            &format!("{param}.content"),
                            "only text content parts are supported",
                        ));
                    }
                }
            }
            text
        }
        _ => {
            return Err(ApiError::bad_param(
                &format!("{param}.content"),
                format!("`{param}.content` must be a string"),
            ));
        }
    };
    Ok(ChatMessage::new(role, content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param_of(e: ApiError) -> Option<String> {
        match e {
            ApiError::BadRequest { param, .. } => param,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn unknown_options_are_refused_by_name() {
        let e = CompletionRequest::parse(json!({"model": "m", "prompt": "x", "logprobs": 2}))
            .unwrap_err();
        assert!(e.to_string().contains("`logprobs`"), "{e}");
        assert_eq!(param_of(e).as_deref(), Some("logprobs"));
        let e = ChatRequest::parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": []}),
            64,
        )
        .unwrap_err();
        assert_eq!(param_of(e).as_deref(), Some("tools"));
    }

    #[test]
    fn values_out_of_range_name_their_field() {
        for (body, name) in [
            (
                json!({"model": "m", "prompt": "x", "temperature": 3}),
                "temperature",
            ),
            (json!({"model": "m", "prompt": "x", "top_p": 0}), "top_p"),
            (json!({"model": "m", "prompt": "x", "n": 2}), "n"),
            (
                json!({"model": "m", "prompt": "x", "max_tokens": -1}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}),
                "stop",
            ),
            (json!({"model": "m", "prompt": 5}), "prompt"),
            (json!({"prompt": "x"}), "model"),
            (
                json!({"model": "m", "prompt": "x", "presence_penalty": 0.5}),
                "presence_penalty",
            ),
            (
                json!({"model": "m", "prompt": "x", "stream_options": {"include_usage": true}}),
                "stream_options",
            ),
        ] {
            let e = CompletionRequest::parse(body).unwrap_err();
            assert_eq!(param_of(e).as_deref(), Some(name));
        }
    }

    #[test]
    fn zero_max_tokens_is_named_as_such_not_as_a_context_overflow() {
        for body in [
            json!({"model": "m", "prompt": "x", "max_tokens": 0}),
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                   "max_completion_tokens": 0}),
        ] {
            let chat = body.get("messages").is_some();
            let e = if chat {
                ChatRequest::parse(body, 64).unwrap_err()
            } else {
                CompletionRequest::parse(body).unwrap_err()
            };
            let text = e.to_string();
            assert!(text.contains("must be at least 1, got 0"), "{text}");
            assert!(!text.contains("context"), "{text}");
            let name = if chat {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            assert_eq!(param_of(e).as_deref(), Some(name));
        }
    }

    #[test]
    fn defaults_follow_openai() {
        let r = CompletionRequest::parse(
            json!({"model": "m", "prompt": ["hi"], "seed": 7, "stop": "\n"}),
        )
        .unwrap();
        assert_eq!(r.prompt, "hi");
        assert_eq!(r.common.max_tokens, 16);
        assert_eq!(r.common.sampling.temperature, 1.0);
        assert_eq!(r.common.sampling.top_p, None);
        assert_eq!(r.common.sampling.seed, 7);
        assert_eq!(r.common.stop, vec!["\n".to_string()]);
        let c = ChatRequest::parse(json!({"model": "m", "max_completion_tokens": 5,
            "messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}]}), 64).unwrap();
        assert_eq!(c.common.max_tokens, 5);
        assert!(c.common.max_tokens_explicit);
        assert_eq!(c.messages, vec![ChatMessage::system("be brief")]);
        let plain = ChatRequest::parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            64,
        )
        .unwrap();
        assert_eq!(plain.common.max_tokens, 64, "the server's default budget");
        assert!(!plain.common.max_tokens_explicit);
    }
}
