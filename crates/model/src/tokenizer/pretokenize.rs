//! Pre-tokenization of byte-level BPE: splitting text into words with the
//! regular expressions llama.cpp selects from `tokenizer.ggml.pre`.
//!
//! Each expression in the list splits every piece produced by the previous
//! one; text between matches is kept as pieces of its own, and each piece is
//! matched on its own (a lookahead does not see past the piece's end). This
//! is how llama.cpp applies its lists (e.g. SmolLM's "smollm": first every
//! digit alone, then the GPT-2 expression).

use fancy_regex::Regex;

use super::error::{TokenizerError, TokenizerResult};

/// GPT-2's expression, with the trailing `\s+` that llama.cpp's built-in
/// implementation of it applies.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// GPT-2's expression without the trailing `\s+` (llama.cpp's "default" list).
const GPT2_NO_TRAILING: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's expression (case-insensitive contractions, digits in threes).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's expression (as Llama 3's, digits alone).
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer of a byte-level BPE vocabulary.
#[derive(Debug, Clone)]
pub(crate) struct PreTokenizer {
    regexes: Vec<Regex>,
    /// Whether a word that is itself a token skips the merges (Llama 3).
    pub(crate) ignore_merges: bool,
    /// Whether llama.cpp adds BOS by default for this pre-tokenizer.
    pub(crate) default_add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for the given `tokenizer.ggml.pre`
    /// value (`None` when the key is absent: llama.cpp's "default").
    pub(crate) fn for_name(pre: Option<&str>) -> TokenizerResult<PreTokenizer> {
        let (patterns, ignore_merges, default_add_bos): (&[&str], bool, bool) = match pre {
            None | Some("default") => (
                &[
                    r"[\p{P}\$\+<=>\^~\|]+",
                    GPT2_NO_TRAILING,
                    r"\p{N}+",
                    "[0-9][0-9][0-9]",
                ],
                false,
                false,
            ),
            Some(
                "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
                | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
                | "trillion" | "granite-docling" | "exaone4",
            ) => (&[GPT2], false, false),
            Some(
                "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
                | "minerva-7b" | "mellum2",
            ) => (&[r"\p{N}", GPT2], false, false),
            Some(
                "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
                | "midm-2.0" | "lfm2" | "jina-v5-nano",
            ) => (&[LLAMA3], true, true),
            Some("dbrx" | "smaug-bpe") => (&[LLAMA3], false, false),
            Some("qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez") => (&[QWEN2], false, false),
            Some(other) => {
                return Err(TokenizerError::UnsupportedPreTokenizer {
                    pre: other.to_owned(),
                });
            }
        };
        let regexes = patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| TokenizerError::Regex(Box::new(e))))
            .collect::<TokenizerResult<Vec<_>>>()?;
        Ok(PreTokenizer {
            regexes,
            ignore_merges,
            default_add_bos,
        })
    }

    /// Splits `text` into words, calling `word` on each in order.
    pub(crate) fn split<'t>(
        &self,
        text: &'t str,
        mut word: impl FnMut(&'t str),
    ) -> TokenizerResult<()> {
        let mut pieces = vec![text];
        let mut next = Vec::new();
        let (last, rest) = match self.regexes.split_last() {
            Some(split) => split,
            None => {
                word(text);
                return Ok(());
            }
        };
        for regex in rest {
            next.clear();
            for &piece in &pieces {
                split_one(regex, piece, |w| next.push(w))?;
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        for &piece in &pieces {
            split_one(last, piece, &mut word)?;
        }
        Ok(())
    }
}

/// Splits one piece by one expression: matches and the text between them.
fn split_one<'t>(
    regex: &Regex,
    piece: &'t str,
    mut out: impl FnMut(&'t str),
) -> TokenizerResult<()> {
    let mut rest = 0;
    for m in regex.find_iter(piece) {
        let m = m.map_err(|e| TokenizerError::Regex(Box::new(e)))?;
        if m.start() == m.end() {
            continue;
        }
        if m.start() > rest {
            out(&piece[rest..m.start()]);
        }
        out(m.as_str());
        rest = m.end();
    }
    if rest < piece.len() {
        out(&piece[rest..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: Option<&str>, text: &str) -> Vec<String> {
        let p = PreTokenizer::for_name(pre).unwrap();
        let mut out = Vec::new();
        p.split(text, |w| out.push(w.to_owned())).unwrap();
        out
    }

    #[test]
    fn gpt2_splits_words_spaces_and_contractions() {
        assert_eq!(
            words(Some("gpt-2"), "Hello world's  end\n\n  x"),
            ["Hello", " world", "'s", " ", " end", "\n\n ", " x"]
        );
    }

    #[test]
    fn gpt2_keeps_trailing_whitespace_together() {
        assert_eq!(words(Some("gpt-2"), "a   "), ["a", "   "]);
    }

    #[test]
    fn smollm_splits_every_digit_before_gpt2() {
        assert_eq!(
            words(Some("smollm"), "in 2024, x12"),
            ["in", " ", "2", "0", "2", "4", ",", " x", "1", "2"]
        );
    }

    #[test]
    fn llama3_groups_digits_in_threes() {
        assert_eq!(
            words(Some("llama3"), "12345 I'M"),
            ["123", "45", " I", "'M"]
        );
    }

    #[test]
    fn unknown_pre_tokenizer_is_named_in_the_error() {
        let err = PreTokenizer::for_name(Some("no-such-pre")).unwrap_err();
        assert!(err.to_string().contains("no-such-pre"), "{err}");
        assert!(err.to_string().contains("tokenizer.ggml.pre"), "{err}");
    }
}
