//! Tokenizers and chat templates built from GGUF metadata.
//!
//! [`Tokenizer::from_gguf`] reads the `tokenizer.*` keys of a GGUF file and
//! reproduces llama.cpp's tokenization of the two vocabulary types of the
//! Llama family:
//!
//! * `tokenizer.ggml.model = "gpt2"`: byte-level BPE (SmolLM2, GPT-2,
//!   Llama 3, Qwen 2). `tokenizer.ggml.pre` picks the pre-tokenizer regular
//!   expressions ([`pretokenize`]), then each word is merged by rank
//!   ([`bpe`]).
//! * `tokenizer.ggml.model = "llama"`: SentencePiece-style BPE by piece score
//!   with `<0xXX>` byte fallback and `▁` for spaces (Llama 2, TinyLlama)
//!   ([`spm`]).
//!
//! Encoding first cuts special tokens out of the text ([`special`]): control
//! tokens such as `<|im_start|>` only when the caller asks (`parse_special`),
//! user-defined tokens always, exactly as llama.cpp does. Decoding
//! ([`decode`]) maps each token to bytes computed once at load time;
//! [`TokenStreamDecoder`] does it token by token for streaming output and
//! only ever emits complete UTF-8.
//!
//! [`ChatTemplate`] renders the Jinja template in `tokenizer.chat_template`
//! with minijinja configured like Hugging Face transformers' jinja2 setup.
//!
//! Known differences from llama.cpp, all outside the supported models:
//! the model-specific token-attribute hacks (Phi-3 rstrip, gpt-oss), the
//! rarer pre-tokenizers (an unknown `tokenizer.ggml.pre` is an error, not a
//! silent fallback), and `clean_up_tokenization_spaces` on decode (not
//! applied, so that decoding is the exact inverse of encoding).

mod bpe;
mod chat;
mod decode;
mod error;
mod metadata;
mod pretokenize;
mod special;
mod spm;
mod vocab;

use std::collections::HashMap;
use std::fmt;

use candle_core::quantized::gguf_file::Value;

use self::bpe::BpeModel;
use self::decode::{PieceState, PieceStyle, Pieces};
use self::metadata::keys;
use self::pretokenize::PreTokenizer;
use self::special::Fragment;
use self::spm::SpmModel;
use self::vocab::{Attr, SpecialDefaults, Vocab};

pub use self::chat::{ChatMessage, ChatTemplate};
pub use self::decode::TokenStreamDecoder;
pub use self::error::{TokenizerError, TokenizerResult};

/// Which tokenizer algorithm a GGUF vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
    ByteLevelBpe,
    /// SentencePiece-style BPE (`tokenizer.ggml.model = "llama"`).
    SentencePiece,
}

#[derive(Clone)]
enum Model {
    Bpe(BpeModel),
    Spm(SpmModel),
}

/// A tokenizer built from GGUF metadata: text to token ids and back.
///
/// Immutable once built; share it between threads behind an `Arc`.
#[derive(Clone)]
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    pieces: Pieces,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind())
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.vocab.bos)
            .field("eos_id", &self.vocab.eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's metadata (as read by
    /// `candle_core::quantized::gguf_file::Content::read`).
    ///
    /// Errors name the offending key: a missing or ill-typed
    /// `tokenizer.ggml.*` key, an unsupported `tokenizer.ggml.model` or
    /// `tokenizer.ggml.pre`, inconsistent array lengths, duplicate tokens.
    pub fn from_gguf(metadata: &HashMap<String, Value>) -> TokenizerResult<Tokenizer> {
        let model_name = metadata::string(metadata, keys::MODEL)?;
        match model_name {
            "gpt2" => {
                let pre = PreTokenizer::for_name(metadata::optional_string(metadata, keys::PRE)?)?;
                let defaults = SpecialDefaults {
                    bos: None,
                    eos: None,
                    unk: None,
                    add_bos: pre.default_add_bos,
                };
                let vocab = Vocab::from_metadata(metadata, defaults)?;
                let model = BpeModel::new(metadata, &vocab, pre)?;
                let pieces = Pieces::build(&vocab, PieceStyle::ByteLevel);
                Ok(Tokenizer {
                    vocab,
                    model: Model::Bpe(model),
                    pieces,
                })
            }
            "llama" => {
                // llama.cpp's defaults for SentencePiece vocabularies.
                let defaults = SpecialDefaults {
                    bos: Some(1),
                    eos: Some(2),
                    unk: Some(0),
                    add_bos: true,
                };
                let vocab = Vocab::from_metadata(metadata, defaults)?;
                let add_space_prefix =
                    metadata::optional_bool(metadata, keys::ADD_SPACE_PREFIX)?.unwrap_or(true);
                let model = SpmModel::new(&vocab, add_space_prefix);
                let pieces = Pieces::build(&vocab, PieceStyle::SentencePiece { add_space_prefix });
                Ok(Tokenizer {
                    vocab,
                    model: Model::Spm(model),
                    pieces,
                })
            }
            other => Err(TokenizerError::UnsupportedModel {
                model: other.to_owned(),
            }),
        }
    }

    /// The tokenizer algorithm.
    pub fn kind(&self) -> TokenizerKind {
        match self.model {
            Model::Bpe(_) => TokenizerKind::ByteLevelBpe,
            Model::Spm(_) => TokenizerKind::SentencePiece,
        }
    }

    /// Tokenizes `text` without adding BOS/EOS.
    ///
    /// With `parse_special`, control tokens written literally in the text
    /// (e.g. `<|im_start|>` in a rendered chat template) become their ids;
    /// without it they are tokenized as ordinary text. User-defined tokens
    /// are always recognised.
    pub fn encode(&self, text: &str, parse_special: bool) -> TokenizerResult<Vec<u32>> {
        self.encode_inner(text, parse_special, false)
    }

    /// Tokenizes `text` like [`encode`](Self::encode) and adds the special
    /// tokens the GGUF asks for: BOS in front when `add_bos_token` is set,
    /// EOS at the end when `add_eos_token` is set (llama.cpp's
    /// `add_special`).
    pub fn encode_with_bos(&self, text: &str, parse_special: bool) -> TokenizerResult<Vec<u32>> {
        self.encode_inner(text, parse_special, true)
    }

    fn encode_inner(
        &self,
        text: &str,
        parse_special: bool,
        add_special: bool,
    ) -> TokenizerResult<Vec<u32>> {
        let vocab = &self.vocab;
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && vocab.add_bos {
            out.extend(vocab.bos);
        }
        let fragments = special::partition(vocab, text, parse_special);
        match &self.model {
            Model::Bpe(model) => {
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(text) => model.encode(vocab, text, &mut out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Model::Spm(model) => {
                // A space is put before the first text and each text after a special token.
                let mut after_special = true;
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(text) => {
                            model.encode(
                                vocab,
                                text,
                                model.add_space_prefix && after_special,
                                &mut out,
                            );
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
        }
        if add_special && vocab.add_eos {
            out.extend(vocab.eos);
        }
        Ok(out)
    }

    /// Turns token ids into text. With `skip_special`, control and unknown
    /// tokens (`<|im_end|>`, `<s>`, ...) are left out, as user-facing text
    /// wants; without it every token's text is kept, so that
    /// `decode(encode(x, true), false) == x` (except, for SentencePiece
    /// vocabularies, text that itself contains `▁`, which decodes as a space).
    ///
    /// Bytes that do not form valid UTF-8 become U+FFFD. An id outside the
    /// vocabulary is an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> TokenizerResult<String> {
        let mut state = PieceState::new(&self.pieces);
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            state.append(&self.pieces, id, skip_special, &mut bytes)?;
        }
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
        })
    }

    /// An incremental decoder for streaming generated tokens as text (see
    /// [`TokenStreamDecoder`]).
    pub fn stream_decoder(&self, skip_special: bool) -> TokenStreamDecoder<'_> {
        TokenStreamDecoder::new(self, skip_special)
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.vocab.bos
    }

    /// The end-of-sequence token, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// The unknown token, if the vocabulary has one.
    pub fn unk_id(&self) -> Option<u32> {
        self.vocab.unk
    }

    /// The padding token, if the vocabulary names one.
    pub fn pad_id(&self) -> Option<u32> {
        self.vocab.pad
    }

    /// Whether [`encode_with_bos`](Self::encode_with_bos) puts BOS in front.
    pub fn add_bos_token(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether [`encode_with_bos`](Self::encode_with_bos) appends EOS.
    pub fn add_eos_token(&self) -> bool {
        self.vocab.add_eos
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The id of the token whose vocabulary text is exactly `text`
    /// (vocabulary form: `Ġ` / `▁` for spaces, `<|im_end|>` for specials).
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.vocab.ids.get(text).copied()
    }

    /// The vocabulary text of token `id`.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(String::as_str)
    }

    /// Whether `id` ends generation: EOS, end-of-turn tokens such as
    /// `<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, as llama.cpp decides.
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.contains(&id)
    }

    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.vocab.eog.iter().copied()
    }

    /// Whether `id` is a control token (left out by `skip_special` decoding).
    pub fn is_control(&self, id: u32) -> bool {
        (id as usize) < self.vocab.len() && self.vocab.attr(id).has(Attr::CONTROL)
    }
}
