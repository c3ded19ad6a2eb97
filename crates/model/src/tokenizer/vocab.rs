//! The vocabulary: token texts, scores, attributes, special ids and the
//! end-of-generation set, read from GGUF metadata the way llama.cpp reads them.

use std::collections::{BTreeSet, HashMap};

use super::error::{TokenizerError, TokenizerResult};
use super::metadata::{self, Metadata, keys};

/// Per-token attribute bits (llama.cpp's `llama_token_attr`, reduced to what
/// tokenization and decoding use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Attr(u8);

impl Attr {
    pub(crate) const NORMAL: Attr = Attr(1);
    pub(crate) const UNKNOWN: Attr = Attr(1 << 1);
    pub(crate) const CONTROL: Attr = Attr(1 << 2);
    pub(crate) const USER_DEFINED: Attr = Attr(1 << 3);
    pub(crate) const UNUSED: Attr = Attr(1 << 4);
    pub(crate) const BYTE: Attr = Attr(1 << 5);

    /// Maps a GGUF `token_type` value (1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte; anything else undefined).
    fn from_gguf_type(token_type: i32) -> Attr {
        match token_type {
            1 => Attr::NORMAL,
            2 => Attr::UNKNOWN,
            3 => Attr::CONTROL,
            4 => Attr::USER_DEFINED,
            5 => Attr::UNUSED,
            6 => Attr::BYTE,
            _ => Attr::default(),
        }
    }

    pub(crate) fn has(self, other: Attr) -> bool {
        self.0 & other.0 != 0
    }

    fn insert(&mut self, other: Attr) {
        self.0 |= other.0;
    }
}

impl std::ops::BitOr for Attr {
    type Output = Attr;
    fn bitor(self, rhs: Attr) -> Attr {
        Attr(self.0 | rhs.0)
    }
}

/// Token texts that end generation (llama.cpp's list, matched by text).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
];

/// Fill-in-the-middle tokens llama.cpp treats as end of generation
/// (pad, repository, file separator), found by key or else by text.
const FIM_EOG: &[(&str, &[&str])] = &[
    (
        keys::FIM_PAD_ID,
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        keys::FIM_REP_ID,
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    (keys::FIM_SEP_ID, &["<|file_sep|>"]),
];

/// Default special ids when the GGUF names none (llama.cpp's defaults for
/// SentencePiece vocabularies; byte-level BPE vocabularies have none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpecialDefaults {
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) unk: Option<u32>,
    pub(crate) add_bos: bool,
}

/// The vocabulary shared by both tokenizer models.
#[derive(Debug, Clone)]
pub(crate) struct Vocab {
    pub(crate) texts: Vec<String>,
    pub(crate) scores: Vec<f32>,
    pub(crate) attrs: Vec<Attr>,
    pub(crate) ids: HashMap<String, u32>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) unk: Option<u32>,
    pub(crate) pad: Option<u32>,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    /// Ids that end generation, sorted.
    pub(crate) eog: BTreeSet<u32>,
    /// Control, user-defined and unknown tokens, longest text first: the
    /// order in which they are cut out of the input before tokenization.
    pub(crate) partition_order: Vec<u32>,
}

impl Vocab {
    /// Reads tokens, scores, types and special ids.
    pub(crate) fn from_metadata(
        md: &Metadata,
        defaults: SpecialDefaults,
    ) -> TokenizerResult<Vocab> {
        // An empty token text would match everywhere; llama.cpp renames it.
        let texts: Vec<String> = metadata::string_array(md, keys::TOKENS)?
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                if text.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    text.to_owned()
                }
            })
            .collect();
        let n = texts.len();
        if n == 0 {
            return Err(invalid(keys::TOKENS, "the vocabulary is empty"));
        }
        if u32::try_from(n).is_err() {
            return Err(invalid(keys::TOKENS, "more than 2^32 tokens"));
        }

        let scores = match metadata::optional_f32_array(md, keys::SCORES)? {
            Some(scores) if scores.len() < n => {
                return Err(invalid(
                    keys::SCORES,
                    &format!("{} scores for {n} tokens", scores.len()),
                ));
            }
            Some(mut scores) => {
                scores.truncate(n);
                scores
            }
            None => vec![0.0; n],
        };

        let mut attrs = match metadata::optional_i32_array(md, keys::TOKEN_TYPE)? {
            Some(types) if types.len() < n => {
                return Err(invalid(
                    keys::TOKEN_TYPE,
                    &format!("{} token types for {n} tokens", types.len()),
                ));
            }
            Some(types) => types[..n]
                .iter()
                .map(|&t| Attr::from_gguf_type(t))
                .collect(),
            None => vec![Attr::NORMAL; n],
        };

        let mut ids = HashMap::with_capacity(n);
        for (id, text) in texts.iter().enumerate() {
            if let Some(previous) = ids.insert(text.clone(), id as u32) {
                return Err(invalid(
                    keys::TOKENS,
                    &format!("token {text:?} appears twice (ids {previous} and {id})"),
                ));
            }
        }

        let special = |key: &str, default: Option<u32>| -> TokenizerResult<Option<u32>> {
            let default = default.filter(|&id| (id as usize) < n);
            match metadata::optional_id(md, key)? {
                Some(id) if (id as usize) < n => Ok(Some(id)),
                Some(id) => {
                    // llama.cpp ignores an out-of-range id and keeps the default.
                    tracing::warn!(
                        key,
                        id,
                        vocab_size = n,
                        "special token id out of range, ignored"
                    );
                    Ok(default)
                }
                None => Ok(default),
            }
        };
        let bos = special(keys::BOS_ID, defaults.bos)?;
        let eos = special(keys::EOS_ID, defaults.eos)?;
        let unk = special(keys::UNK_ID, defaults.unk)?;
        let pad = special(keys::PAD_ID, None)?;
        let eot = special(keys::EOT_ID, None)?;
        let eom = special(keys::EOM_ID, None)?;

        let add_bos = metadata::optional_bool(md, keys::ADD_BOS)?.unwrap_or(defaults.add_bos);
        let add_eos = metadata::optional_bool(md, keys::ADD_EOS)?.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(invalid(
                keys::ADD_BOS,
                &format!("is true but `{}` is not set", keys::BOS_ID),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(invalid(
                keys::ADD_EOS,
                &format!("is true but `{}` is not set", keys::EOS_ID),
            ));
        }

        // End of generation, as llama.cpp determines it: eos, eot, eom, the
        // fill-in-the-middle pad/repo/separator tokens and a list of texts.
        // Tokens found by text are forced to control type, as llama.cpp does.
        let mut eog = BTreeSet::new();
        for (key, texts_for_key) in FIM_EOG {
            match special(key, None)? {
                Some(id) => {
                    eog.insert(id);
                }
                None => {
                    for text in *texts_for_key {
                        if let Some(&id) = ids.get(*text) {
                            attrs[id as usize].insert(Attr::CONTROL);
                            eog.insert(id);
                        }
                    }
                }
            }
        }
        for text in EOG_TEXTS {
            if let Some(&id) = ids.get(*text) {
                attrs[id as usize].insert(Attr::CONTROL);
                eog.insert(id);
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());

        let mut partition_order: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                attrs[id as usize].has(Attr::CONTROL | Attr::USER_DEFINED | Attr::UNKNOWN)
            })
            .collect();
        // Longest first; equal lengths by id so the order is deterministic.
        partition_order.sort_by_key(|&id| std::cmp::Reverse(texts[id as usize].len()));

        Ok(Vocab {
            texts,
            scores,
            attrs,
            ids,
            bos,
            eos,
            unk,
            pad,
            add_bos,
            add_eos,
            eog,
            partition_order,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    pub(crate) fn attr(&self, id: u32) -> Attr {
        self.attrs[id as usize]
    }
}

fn invalid(key: &str, reason: &str) -> TokenizerError {
    TokenizerError::InvalidMetadata {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}
