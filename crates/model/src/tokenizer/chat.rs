//! Chat templates: the Jinja template a GGUF carries in
//! `tokenizer.chat_template`, rendered the way Hugging Face transformers
//! renders it.
//!
//! transformers uses jinja2 with `trim_blocks` and `lstrip_blocks`, the
//! loop-control extension, a `raise_exception(message)` function, a `tojson`
//! filter that is Python's `json.dumps` (no HTML escaping, `", "` and `": "`
//! separators), and passes `messages`, `add_generation_prompt`, `tools`,
//! `documents` and the special tokens (`bos_token`, `eos_token`, ...). This
//! module sets minijinja up the same way, with minijinja-contrib's Python
//! compatibility so templates may call string methods such as `.strip()`.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};

use super::error::TokenizerResult;
use super::metadata::{self, Metadata, keys};

/// One message of a conversation, as the OpenAI chat API and HF chat
/// templates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks: usually "system", "user" or "assistant".
    pub role: String,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A "system" message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// A "user" message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// An "assistant" message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// Gemma's turn format, for Gemma GGUF files that carry no template (the
/// one llama.cpp falls back to for them): a system message is folded into
/// the first user turn, the assistant's role is called `model`, and the
/// tokenizer adds BOS itself.
const GEMMA_TEMPLATE: &str = "\
{%- if messages and messages[0]['role'] == 'system' -%}\
{%- set prefix = messages[0]['content'] ~ '\\n\\n' -%}{%- set turns = messages[1:] -%}\
{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}\
{%- for m in turns -%}\
{{- '<start_of_turn>' ~ ('model' if m['role'] == 'assistant' else m['role']) ~ '\\n' -}}\
{{- (prefix if loop.first else '') ~ (m['content'] | trim) ~ '<end_of_turn>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}";

/// A compiled chat template with the special-token strings it may use.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Reads `tokenizer.chat_template` and the BOS/EOS token texts from GGUF
    /// metadata and compiles the template. A Gemma file without a template
    /// gets Gemma's turn format.
    pub fn from_gguf(metadata: &Metadata) -> TokenizerResult<ChatTemplate> {
        let gemma = metadata::optional_string(metadata, "general.architecture")?
            .is_some_and(|arch| arch.starts_with("gemma"));
        let source = match metadata::optional_string(metadata, keys::CHAT_TEMPLATE)? {
            None if gemma => GEMMA_TEMPLATE,
            _ => metadata::string(metadata, keys::CHAT_TEMPLATE)?,
        };
        let tokens = metadata::string_array(metadata, keys::TOKENS)?;
        // SentencePiece vocabularies default to BOS 1 and EOS 2, as in the tokenizer.
        let sentencepiece = metadata::optional_string(metadata, keys::MODEL)? == Some("llama");
        let token_text = |key: &str, default: u32| -> TokenizerResult<String> {
            let id = metadata::optional_id(metadata, key)?.or(sentencepiece.then_some(default));
            Ok(id
                .and_then(|id| tokens.get(id as usize))
                .map(|text| (*text).to_owned())
                .unwrap_or_default())
        };
        let bos_token = token_text(keys::BOS_ID, 1)?;
        let eos_token = token_text(keys::EOS_ID, 2)?;
        ChatTemplate::new(source, bos_token, eos_token)
    }

    /// Compiles `source` with the given `bos_token` and `eos_token` strings.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> TokenizerResult<ChatTemplate> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(false)
                .build()?,
        );
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone())?;
        Ok(ChatTemplate {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends
    /// where the assistant's reply begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> TokenizerResult<String> {
        let messages: Vec<Value> = messages.iter().map(Value::from).collect();
        let template = self.env.get_template(TEMPLATE_NAME)?;
        let rendered = template.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            tools => Value::from(()),
            documents => Value::from(()),
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })?;
        Ok(rendered)
    }
}

/// `raise_exception(message)`: how HF templates reject a conversation.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `tojson(value, indent=None, sort_keys=False, ensure_ascii=False)`:
/// Python's `json.dumps` as transformers exposes it to templates.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let options = JsonOptions {
        indent,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, &value, &options, 0)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOptions {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn write_json(
    out: &mut String,
    value: &Value,
    options: &JsonOptions,
    depth: usize,
) -> Result<(), Error> {
    if depth > 512 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                let f = f64::try_from(value.clone())?;
                write_python_float(out, f);
            }
        }
        ValueKind::String => write_json_string(
            out,
            value.as_str().unwrap_or_default(),
            options.ensure_ascii,
        ),
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                let key = match key.as_str() {
                    Some(s) => s.to_owned(),
                    None => key.to_string(),
                };
                entries.push((key, item));
            }
            if options.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, '{', '}', entries.len(), options, depth, |out, i| {
                write_json_string(out, &entries[i].0, options.ensure_ascii);
                out.push_str(": ");
                write_json(out, &entries[i].1, options, depth + 1)
            })?;
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, '[', ']', items.len(), options, depth, |out, i| {
                write_json(out, &items[i], options, depth + 1)
            })?;
        }
        _ => write_json_string(out, &value.to_string(), options.ensure_ascii),
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    open: char,
    close: char,
    len: usize,
    options: &JsonOptions,
    depth: usize,
    mut item: impl FnMut(&mut String, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        match options.indent {
            Some(indent) => {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.extend(std::iter::repeat_n(' ', indent * (depth + 1)));
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        item(out, i)?;
    }
    if let Some(indent) = options.indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', indent * depth));
    }
    out.push(close);
    Ok(())
}

fn write_python_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        // `{:?}` keeps a ".0" on whole numbers, as Python's repr does.
        let _ = write!(out, "{f:?}");
    }
}

fn write_json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl From<&ChatMessage> for Value {
    fn from(message: &ChatMessage) -> Value {
        // A map in insertion order (role, then content), like the Python dict.
        Value::from_pairs([
            ("role", Value::from(message.role.as_str())),
            ("content", Value::from(message.content.as_str())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TokenizerError;

    fn render(source: &str, messages: &[ChatMessage]) -> TokenizerResult<String> {
        ChatTemplate::new(source, "<s>", "</s>")?.render(messages, true)
    }

    #[test]
    fn trim_and_lstrip_blocks_as_in_transformers() {
        let source = "{% for m in messages %}\n    {{ m.role }}: {{ m.content }}\n{% endfor %}\n";
        let out = render(
            source,
            &[ChatMessage::user("hi"), ChatMessage::assistant("yo")],
        )
        .unwrap();
        assert_eq!(out, "    user: hi\n    assistant: yo\n");
    }

    #[test]
    fn special_tokens_and_generation_prompt_are_variables() {
        let source = "{{ bos_token }}{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}{{ eos_token }}";
        assert_eq!(
            render(source, &[ChatMessage::user("a")]).unwrap(),
            "<s>[a]></s>"
        );
    }

    #[test]
    fn raise_exception_is_a_clear_error() {
        let source = "{% if messages[0].role != 'system' %}{{ raise_exception('system message first') }}{% endif %}";
        let err = render(source, &[ChatMessage::user("x")]).unwrap_err();
        assert!(err.to_string().contains("system message first"), "{err}");
    }

    #[test]
    fn python_string_methods_work() {
        let source = "{{ messages[0].content.strip() }}|{{ messages[0].content.startswith(' a') }}";
        assert_eq!(
            render(source, &[ChatMessage::user(" a b ")]).unwrap(),
            "a b|True"
        );
    }

    #[test]
    fn loop_controls_work() {
        let source = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}";
        let out = render(source, &[ChatMessage::user("1"), ChatMessage::user("2")]).unwrap();
        assert_eq!(out, "1");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let source = "{{ messages[0] | tojson }}|{{ {'a': [1, 2.5, none, true], 'b': '<é\"'} | tojson(indent=2) }}";
        let out = render(source, &[ChatMessage::user("x")]).unwrap();
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"x\"}|{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"b\": \"<é\\\"\"\n}"
        );
    }

    #[test]
    fn syntax_error_is_reported_not_panicked() {
        let err = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(err, TokenizerError::Template { .. }), "{err:?}");
    }

    #[test]
    fn chat_message_serde_uses_openai_field_names() {
        let m: ChatMessage = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(m, ChatMessage::user("hi"));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"role":"user","content":"hi"}"#
        );
    }
}
