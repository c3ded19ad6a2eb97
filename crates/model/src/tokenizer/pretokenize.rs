//! Pre-tokenization of byte-level BPE: splitting text into words with the
//! regular expressions llama.cpp selects from `tokenizer.ggml.pre`.
//!
//! Each expression in the list splits every piece produced by the previous
//! one; text between matches is kept as pieces of its own, and each piece is
//! matched on its own (a lookahead does not see past the piece's end). This
//! is how llama.cpp applies its lists (e.g. SmolLM's "smollm": first every
//! digit alone, then the GPT-2 expression).
//!
//! The upstream expressions end in `\s+(?!\S)|\s+`. A lookahead forces
//! fancy-regex onto its backtracking engine, several times slower, so the
//! expressions here end in plain `\s+` and the lookahead is applied after
//! the match ([`Expression::shrink`]): a whitespace run of two or more
//! characters followed by more text gives back its last character, which
//! then starts the next word. The unit tests check this against the
//! lookahead expressions on random text.

use fancy_regex::Regex;

use super::error::{TokenizerError, TokenizerResult};

/// GPT-2's expression `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// lookahead removed (see the module docs). Also stands for llama.cpp's
/// variant without the final `\s+`: the text that alternative matches is
/// left between matches and becomes a word of its own either way.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// Llama 3's expression (case-insensitive contractions, digits in threes),
/// lookahead removed.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+";

/// Qwen 2's expression (as Llama 3's, digits alone), lookahead removed.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+";

/// How a trailing-whitespace match is cut back to emulate `\s+(?!\S)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shrink {
    /// No lookahead in this expression.
    Never,
    /// Any all-whitespace match (GPT-2).
    Whitespace,
    /// An all-whitespace match not ending in a line break: one that does
    /// came from `\s*[\r\n]+`, which has no lookahead (Llama 3, Qwen 2).
    WhitespaceNotLineBreak,
}

/// One splitting expression.
#[derive(Debug, Clone)]
struct Expression {
    regex: Regex,
    shrink: Shrink,
}

impl Expression {
    fn new(pattern: &str, shrink: Shrink) -> TokenizerResult<Expression> {
        let regex = Regex::new(pattern).map_err(|e| TokenizerError::Regex(Box::new(e)))?;
        Ok(Expression { regex, shrink })
    }

    /// The end of a match starting at `start` and ending at `end` in
    /// `piece`, after applying the `\s+(?!\S)` rule.
    fn shrink(&self, piece: &str, start: usize, end: usize) -> usize {
        if self.shrink == Shrink::Never || end == piece.len() {
            return end;
        }
        let matched = &piece[start..end];
        if !matched.chars().all(char::is_whitespace)
            || (self.shrink == Shrink::WhitespaceNotLineBreak && matched.ends_with(['\r', '\n']))
        {
            return end;
        }
        match matched.char_indices().last() {
            Some((last, _)) if last > 0 => start + last,
            _ => end,
        }
    }
}

/// The pre-tokenizer of a byte-level BPE vocabulary.
#[derive(Debug, Clone)]
pub(crate) struct PreTokenizer {
    expressions: Vec<Expression>,
    /// Whether a word that is itself a token skips the merges (Llama 3).
    pub(crate) ignore_merges: bool,
    /// Whether llama.cpp adds BOS by default for this pre-tokenizer.
    pub(crate) default_add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for the given `tokenizer.ggml.pre`
    /// value (`None` when the key is absent: llama.cpp's "default").
    pub(crate) fn for_name(pre: Option<&str>) -> TokenizerResult<PreTokenizer> {
        use Shrink::{Never, Whitespace, WhitespaceNotLineBreak};
        let (patterns, ignore_merges, default_add_bos): (&[(&str, Shrink)], bool, bool) = match pre
        {
            None | Some("default") => (
                &[
                    (r"[\p{P}\$\+<=>\^~\|]+", Never),
                    (GPT2, Whitespace),
                    (r"\p{N}+", Never),
                    ("[0-9][0-9][0-9]", Never),
                ],
                false,
                false,
            ),
            Some(
                "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
                | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
                | "trillion" | "granite-docling" | "exaone4",
            ) => (&[(GPT2, Whitespace)], false, false),
            Some(
                "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
                | "minerva-7b" | "mellum2",
            ) => (&[(r"\p{N}", Never), (GPT2, Whitespace)], false, false),
            Some(
                "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
                | "midm-2.0" | "lfm2" | "jina-v5-nano",
            ) => (&[(LLAMA3, WhitespaceNotLineBreak)], true, true),
            Some("dbrx" | "smaug-bpe") => (&[(LLAMA3, WhitespaceNotLineBreak)], false, false),
            Some("qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez") => {
                (&[(QWEN2, WhitespaceNotLineBreak)], false, false)
            }
            Some(other) => {
                return Err(TokenizerError::UnsupportedPreTokenizer {
                    pre: other.to_owned(),
                });
            }
        };
        let expressions = patterns
            .iter()
            .map(|&(pattern, shrink)| Expression::new(pattern, shrink))
            .collect::<TokenizerResult<Vec<_>>>()?;
        Ok(PreTokenizer {
            expressions,
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
        let (last, rest) = match self.expressions.split_last() {
            Some(split) => split,
            None => {
                word(text);
                return Ok(());
            }
        };
        for expression in rest {
            next.clear();
            for &piece in &pieces {
                split_one(expression, piece, |w| next.push(w))?;
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
    expression: &Expression,
    piece: &'t str,
    mut out: impl FnMut(&'t str),
) -> TokenizerResult<()> {
    let mut rest = 0;
    let mut pos = 0;
    while pos < piece.len() {
        let found = expression
            .regex
            .find_from_pos(piece, pos)
            .map_err(|e| TokenizerError::Regex(Box::new(e)))?;
        let Some(m) = found else {
            break;
        };
        let start = m.start();
        if m.end() == start {
            // None of the expressions match empty text; step over a character anyway.
            pos = start + piece[start..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let end = expression.shrink(piece, start, m.end());
        if start > rest {
            out(&piece[rest..start]);
        }
        out(&piece[start..end]);
        rest = end;
        pos = end;
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

    /// The upstream expressions, with their lookahead.
    const GPT2_LOOKAHEAD: &str =
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    const GPT2_LOOKAHEAD_NO_TRAILING: &str =
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    const LLAMA3_LOOKAHEAD: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2_LOOKAHEAD: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// Matches and the text between them, by the lookahead expression.
    fn reference_split(regex: &Regex, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = 0;
        for m in regex.find_iter(text) {
            let m = m.unwrap();
            if m.start() > rest {
                out.push(text[rest..m.start()].to_owned());
            }
            out.push(m.as_str().to_owned());
            rest = m.end();
        }
        if rest < text.len() {
            out.push(text[rest..].to_owned());
        }
        out
    }

    fn fast_split(expression: &Expression, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        split_one(expression, text, |w| out.push(w.to_owned())).unwrap();
        out
    }

    /// Random strings over characters that exercise every alternative.
    fn random_texts(seed: u64, count: usize) -> Vec<String> {
        const ALPHABET: &[char] = &[
            ' ', ' ', ' ', '\t', '\n', '\n', '\r', '\u{a0}', '\u{2003}', 'a', 'Z', 'é', '日', 's',
            't', 'l', 'L', 'd', 'v', 'e', 'r', '1', '7', '٣', '½', '\'', '.', '!', '-', '😀',
            '\u{301}',
        ];
        let mut state = seed;
        let mut next = move || {
            // xorshift64*: deterministic, no dependency.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        (0..count)
            .map(|_| {
                let len = (next() % 24) as usize;
                (0..len)
                    .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn whitespace_rule_equals_the_lookahead_expressions() {
        let cases = [
            (GPT2_LOOKAHEAD, GPT2, Shrink::Whitespace),
            (GPT2_LOOKAHEAD_NO_TRAILING, GPT2, Shrink::Whitespace),
            (LLAMA3_LOOKAHEAD, LLAMA3, Shrink::WhitespaceNotLineBreak),
            (QWEN2_LOOKAHEAD, QWEN2, Shrink::WhitespaceNotLineBreak),
        ];
        for (i, (reference, fast, shrink)) in cases.into_iter().enumerate() {
            let reference = Regex::new(reference).unwrap();
            let fast = Expression::new(fast, shrink).unwrap();
            for text in random_texts(0x9E37_79B9_7F4A_7C15 + i as u64, 4000) {
                assert_eq!(
                    fast_split(&fast, &text),
                    reference_split(&reference, &text),
                    "pattern {i} on {text:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_pre_tokenizer_is_named_in_the_error() {
        let err = PreTokenizer::for_name(Some("no-such-pre")).unwrap_err();
        assert!(err.to_string().contains("no-such-pre"), "{err}");
        assert!(err.to_string().contains("tokenizer.ggml.pre"), "{err}");
    }
}
