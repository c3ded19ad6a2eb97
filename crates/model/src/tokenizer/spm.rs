//! SentencePiece-style BPE ("llama" in GGUF): the tokenizer of Llama 2,
//! TinyLlama, Mistral v0.1.
//!
//! Spaces become U+2581 (`▁`), a `▁` is put in front of each text fragment
//! that starts the input or follows a special token (`add_space_prefix`),
//! and then, starting from single characters, the adjacent pair whose
//! concatenation is the highest-scoring vocabulary piece is merged (ties:
//! leftmost first) until no pair is a piece. A character with no piece of its
//! own is emitted as its UTF-8 bytes through the `<0xXX>` byte tokens. The
//! merge loop is a linked list plus a binary heap, O(n log n).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

/// The SentencePiece space symbol.
pub(crate) const SPACE: char = '\u{2581}';

/// SentencePiece BPE model: byte-fallback tokens and the space prefix rule.
#[derive(Debug, Clone)]
pub(crate) struct SpmModel {
    pub(crate) add_space_prefix: bool,
    byte_tokens: Box<[Option<u32>; 256]>,
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    prev: usize,
    next: usize,
    start: usize,
    /// Bytes covered; 0 once merged into its left neighbour.
    len: usize,
}

const NONE: usize = usize::MAX;

/// A mergeable pair, ordered by score (highest first), then leftmost.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl SpmModel {
    /// Finds the byte-fallback tokens (`<0xXX>`, else the byte as a one-character piece).
    pub(crate) fn new(vocab: &Vocab, add_space_prefix: bool) -> SpmModel {
        let mut byte_tokens = [None; 256];
        for (byte, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = vocab
                .ids
                .get(format!("<0x{byte:02X}>").as_str())
                .or_else(|| {
                    char::from_u32(byte as u32)
                        .filter(|c| c.is_ascii())
                        .and_then(|c| vocab.ids.get(c.to_string().as_str()))
                })
                .copied()
                .or(vocab.unk);
        }
        SpmModel {
            add_space_prefix,
            byte_tokens: Box::new(byte_tokens),
        }
    }

    /// Tokenizes one plain-text fragment; `prefix_space` adds the leading `▁`.
    pub(crate) fn encode(&self, vocab: &Vocab, text: &str, prefix_space: bool, out: &mut Vec<u32>) {
        let mut escaped = String::with_capacity(text.len() + 3);
        if prefix_space {
            escaped.push(SPACE);
        }
        for c in text.chars() {
            escaped.push(if c == ' ' { SPACE } else { c });
        }
        self.encode_escaped(vocab, &escaped, out);
    }

    fn encode_escaped(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let index = symbols.len();
            symbols.push(Symbol {
                prev: if index == 0 { NONE } else { index - 1 },
                next: index + 1,
                start,
                len: c.len_utf8(),
            });
        }
        let Some(last) = symbols.last_mut() else {
            return;
        };
        last.next = NONE;

        let mut heap = BinaryHeap::new();
        for left in 1..symbols.len() {
            push_pair(vocab, text, &symbols, &mut heap, left - 1, left);
        }

        while let Some(c) = heap.pop() {
            let (l, r) = (symbols[c.left], symbols[c.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != c.size {
                continue;
            }
            symbols[c.left].len += r.len;
            symbols[c.left].next = r.next;
            symbols[c.right].len = 0;
            if r.next != NONE {
                symbols[r.next].prev = c.left;
            }
            if l.prev != NONE {
                push_pair(vocab, text, &symbols, &mut heap, l.prev, c.left);
            }
            if r.next != NONE {
                push_pair(vocab, text, &symbols, &mut heap, c.left, r.next);
            }
        }

        let mut at = 0;
        while at != NONE {
            let s = symbols[at];
            let piece = &text[s.start..s.start + s.len];
            match vocab.ids.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| self.byte_tokens[b as usize])),
            }
            at = s.next;
        }
    }
}

fn push_pair(
    vocab: &Vocab,
    text: &str,
    symbols: &[Symbol],
    heap: &mut BinaryHeap<Candidate>,
    left: usize,
    right: usize,
) {
    let (l, r) = (symbols[left], symbols[right]);
    let size = l.len + r.len;
    let Some(&id) = vocab.ids.get(&text[l.start..l.start + size]) else {
        return;
    };
    heap.push(Candidate {
        score: vocab.scores[id as usize],
        left,
        right,
        size,
    });
}
