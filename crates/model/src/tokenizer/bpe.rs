//! Byte-level BPE ("gpt2" in GGUF): the tokenizer of SmolLM2, GPT-2, Llama 3,
//! Qwen 2.
//!
//! Each pre-tokenized word is taken as bytes, each byte stands for the token
//! of its GPT-2 printable character, and adjacent pairs are merged lowest
//! merge rank first (ties: leftmost first) until no listed merge applies.
//! The merge loop keeps the symbols in a linked list and the candidate pairs
//! in a binary heap, so a word of n bytes costs O(n log n); a stale heap
//! entry (one of its symbols changed since it was pushed) is skipped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::error::TokenizerResult;
use super::metadata::{self, Metadata, keys};
use super::pretokenize::PreTokenizer;
use super::vocab::Vocab;

/// GPT-2's reversible map from bytes to printable characters: printable
/// Latin-1 bytes map to themselves, the others to U+0100 onwards.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(byte)
        } else {
            let code = next_extra;
            next_extra += 1;
            code
        };
        // Every code is below U+0144, so always a valid char.
        table[byte as usize] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// Inverse of [`byte_to_char_table`]: for each character code below U+0144,
/// the byte it stands for.
pub(crate) fn char_to_byte_map(table: &[char; 256]) -> HashMap<char, u8> {
    table
        .iter()
        .enumerate()
        .map(|(byte, &c)| (c, byte as u8))
        .collect()
}

/// Byte-level BPE model: pre-tokenizer, merge ranks and byte tokens.
#[derive(Debug, Clone)]
pub(crate) struct BpeModel {
    pre: PreTokenizer,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The token of each byte's printable character.
    byte_tokens: Box<[Option<u32>; 256]>,
    byte_chars: Box<[char; 256]>,
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    prev: usize,
    next: usize,
    /// Bytes covered; 0 once merged into its left neighbour.
    len: usize,
    id: Option<u32>,
}

const NONE: usize = usize::MAX;

/// A mergeable pair: (rank, left index, left id, right id, merged id).
/// Ordered by rank, then leftmost; the ids detect stale entries.
type Candidate = (u32, usize, u32, u32, u32);

impl BpeModel {
    /// Reads `tokenizer.ggml.merges` and builds the byte tables.
    pub(crate) fn new(
        md: &Metadata,
        vocab: &Vocab,
        pre: PreTokenizer,
    ) -> TokenizerResult<BpeModel> {
        let byte_chars = byte_to_char_table();
        let mut byte_tokens = [None; 256];
        for (byte, c) in byte_chars.iter().enumerate() {
            byte_tokens[byte] = vocab.ids.get(c.to_string().as_str()).copied();
        }

        let merge_list = metadata::string_array(md, keys::MERGES)?;
        let mut merges = HashMap::with_capacity(merge_list.len());
        let mut joined = String::new();
        for (rank, merge) in merge_list.iter().enumerate() {
            // Split at the first space after the first character, as llama.cpp does.
            let Some((first, second)) = merge
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(at, _)| (&merge[..at], &merge[at + 1..]))
            else {
                continue;
            };
            joined.clear();
            joined.push_str(first);
            joined.push_str(second);
            let (Some(&left), Some(&right), Some(&merged)) = (
                vocab.ids.get(first),
                vocab.ids.get(second),
                vocab.ids.get(joined.as_str()),
            ) else {
                continue;
            };
            merges.entry((left, right)).or_insert((rank as u32, merged));
        }

        Ok(BpeModel {
            pre,
            merges,
            byte_tokens: Box::new(byte_tokens),
            byte_chars: Box::new(byte_chars),
        })
    }

    /// Tokenizes a fragment of plain text (no special tokens in it).
    pub(crate) fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        out: &mut Vec<u32>,
    ) -> TokenizerResult<()> {
        let mut symbols = Vec::new();
        let mut heap = BinaryHeap::new();
        self.pre.split(text, |word| {
            self.encode_word(vocab, word.as_bytes(), &mut symbols, &mut heap, out);
        })
    }

    fn encode_word(
        &self,
        vocab: &Vocab,
        word: &[u8],
        symbols: &mut Vec<Symbol>,
        heap: &mut BinaryHeap<Reverse<Candidate>>,
        out: &mut Vec<u32>,
    ) {
        if self.pre.ignore_merges {
            let encoded: String = word.iter().map(|&b| self.byte_chars[b as usize]).collect();
            if let Some(&id) = vocab.ids.get(encoded.as_str()) {
                out.push(id);
                return;
            }
        }

        symbols.clear();
        heap.clear();
        let n = word.len();
        symbols.extend(word.iter().enumerate().map(|(i, &b)| Symbol {
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == n { NONE } else { i + 1 },
            len: 1,
            id: self.byte_tokens[b as usize],
        }));
        for left in 1..n {
            self.push_pair(symbols, heap, left - 1);
        }

        while let Some(Reverse((_, left, left_id, right_id, merged))) = heap.pop() {
            let l = symbols[left];
            if l.len == 0 || l.id != Some(left_id) || l.next == NONE {
                continue;
            }
            let right = l.next;
            let r = symbols[right];
            if r.id != Some(right_id) {
                continue;
            }
            symbols[left].len += r.len;
            symbols[left].id = Some(merged);
            symbols[left].next = r.next;
            symbols[right].len = 0;
            if r.next != NONE {
                symbols[r.next].prev = left;
            }
            if l.prev != NONE {
                self.push_pair(symbols, heap, l.prev);
            }
            self.push_pair(symbols, heap, left);
        }

        let mut at = 0;
        while at != NONE {
            let s = symbols[at];
            // A byte without a token of its own produces nothing, as in llama.cpp.
            if let Some(id) = s.id {
                out.push(id);
            }
            at = s.next;
        }
    }

    fn push_pair(
        &self,
        symbols: &[Symbol],
        heap: &mut BinaryHeap<Reverse<Candidate>>,
        left: usize,
    ) {
        let l = symbols[left];
        if l.next == NONE {
            return;
        }
        let (Some(left_id), Some(right_id)) = (l.id, symbols[l.next].id) else {
            return;
        };
        if let Some(&(rank, merged)) = self.merges.get(&(left_id, right_id)) {
            heap.push(Reverse((rank, left, left_id, right_id, merged)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_gpt2_characters() {
        let table = byte_to_char_table();
        assert_eq!(table[b'A' as usize], 'A');
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        let mut seen: Vec<char> = table.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        let inverse = char_to_byte_map(&table);
        for byte in 0..=255u8 {
            assert_eq!(inverse[&table[byte as usize]], byte);
        }
    }
}
