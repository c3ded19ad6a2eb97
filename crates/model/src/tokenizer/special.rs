//! Cutting special tokens out of the input before the tokenizer model runs.
//!
//! As in llama.cpp, the special tokens are searched longest first: each one
//! splits every still-unprocessed text fragment at its occurrences. Control
//! and unknown tokens are only recognised when the caller asks for it
//! (`parse_special`); user-defined tokens always are.

use super::vocab::{Attr, Vocab};

/// A piece of the input: raw text for the tokenizer model, or a token
/// already recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// Splits `text` into fragments at the special tokens it contains.
pub(crate) fn partition<'a>(
    vocab: &Vocab,
    text: &'a str,
    parse_special: bool,
) -> Vec<Fragment<'a>> {
    let mut fragments = vec![Fragment::Text(text)];
    if text.is_empty() {
        fragments.clear();
        return fragments;
    }
    for &id in &vocab.partition_order {
        if !parse_special && vocab.attr(id).has(Attr::CONTROL | Attr::UNKNOWN) {
            continue;
        }
        let needle = vocab.texts[id as usize].as_str();
        // Cheap pre-check: most special tokens do not occur at all.
        let occurs = fragments
            .iter()
            .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)));
        if !occurs {
            continue;
        }
        let mut next = Vec::with_capacity(fragments.len() + 2);
        for fragment in fragments {
            match fragment {
                Fragment::Token(_) => next.push(fragment),
                Fragment::Text(t) => {
                    let mut rest = 0;
                    for (at, _) in t.match_indices(needle) {
                        if at > rest {
                            next.push(Fragment::Text(&t[rest..at]));
                        }
                        next.push(Fragment::Token(id));
                        rest = at + needle.len();
                    }
                    if rest < t.len() {
                        next.push(Fragment::Text(&t[rest..]));
                    }
                }
            }
        }
        fragments = next;
    }
    fragments
}
