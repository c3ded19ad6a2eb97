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
use std::sync::RwLock;

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
    merges: MergeTable,
    cache: WordCache,
    /// The token of each byte's printable character.
    byte_tokens: Box<[Option<u32>; 256]>,
    byte_chars: Box<[char; 256]>,
}

/// Merge ranks indexed by left token: for each left id, its (right id,
/// rank, merged id) entries sorted by right id. A lookup is an index and a
/// binary search over a few entries, cheaper than hashing the pair.
#[derive(Debug, Clone)]
struct MergeTable {
    /// `offsets[left]..offsets[left + 1]` are the entries of `left`.
    offsets: Vec<u32>,
    entries: Vec<(u32, u32, u32)>,
}

impl MergeTable {
    /// Builds the table from (left, right, rank, merged); the first
    /// occurrence of a pair wins, as in llama.cpp.
    fn new(vocab_size: usize, mut merges: Vec<(u32, u32, u32, u32)>) -> MergeTable {
        merges.sort_by_key(|&(left, right, rank, _)| (left, right, rank));
        merges.dedup_by_key(|&mut (left, right, _, _)| (left, right));
        let mut offsets = vec![0u32; vocab_size + 1];
        for &(left, ..) in &merges {
            offsets[left as usize + 1] += 1;
        }
        for i in 0..vocab_size {
            offsets[i + 1] += offsets[i];
        }
        let entries = merges
            .into_iter()
            .map(|(_, right, rank, merged)| (right, rank, merged))
            .collect();
        MergeTable { offsets, entries }
    }

    /// The (rank, merged id) of merging `left` with `right`, if listed.
    fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        let start = *self.offsets.get(left as usize)? as usize;
        let end = *self.offsets.get(left as usize + 1)? as usize;
        let entries = &self.entries[start..end];
        let at = entries.binary_search_by_key(&right, |&(r, ..)| r).ok()?;
        let (_, rank, merged) = entries[at];
        Some((rank, merged))
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    prev: usize,
    next: usize,
    /// False once merged into its left neighbour.
    alive: bool,
    id: Option<u32>,
}

/// Words up to this many bytes are merged by [`BpeModel::merge_short`].
const SHORT_WORD: usize = 48;

/// Buffers reused from word to word.
#[derive(Debug, Default)]
struct Scratch {
    ids: Vec<Option<u32>>,
    pairs: Vec<Option<(u32, u32)>>,
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<Candidate>>,
}

/// Token ids of recently seen words, shared by all callers. Natural text
/// repeats words, so most words skip the merge loop. Bounded: once full,
/// new words are no longer added.
#[derive(Debug, Default)]
struct WordCache {
    words: RwLock<WordIds>,
}

/// Word bytes to token ids.
type WordIds = HashMap<Box<[u8]>, Box<[u32]>>;

impl WordCache {
    const CAPACITY: usize = 32_768;
    const MAX_WORD: usize = 64;

    /// Appends the cached ids of `word` to `out`; false if not cached.
    fn extend_from(&self, word: &[u8], out: &mut Vec<u32>) -> bool {
        if word.len() > Self::MAX_WORD {
            return false;
        }
        let Ok(words) = self.words.read() else {
            return false;
        };
        match words.get(word) {
            Some(ids) => {
                out.extend_from_slice(ids);
                true
            }
            None => false,
        }
    }

    fn insert(&self, word: &[u8], ids: &[u32]) {
        if word.len() > Self::MAX_WORD {
            return;
        }
        if let Ok(mut words) = self.words.write()
            && words.len() < Self::CAPACITY
        {
            words.insert(word.into(), ids.into());
        }
    }
}

impl Clone for WordCache {
    /// A clone starts with an empty cache.
    fn clone(&self) -> Self {
        WordCache::default()
    }
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
        let mut merges = Vec::with_capacity(merge_list.len());
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
            if let (Some(&left), Some(&right), Some(&merged)) = (
                vocab.ids.get(first),
                vocab.ids.get(second),
                vocab.ids.get(joined.as_str()),
            ) {
                merges.push((left, right, rank as u32, merged));
            }
        }
        let merges = MergeTable::new(vocab.len(), merges);

        Ok(BpeModel {
            pre,
            merges,
            cache: WordCache::default(),
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
        let mut scratch = Scratch::default();
        self.pre.split(text, |word| {
            self.encode_word(vocab, word.as_bytes(), &mut scratch, out);
        })
    }

    fn encode_word(&self, vocab: &Vocab, word: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        if self.pre.ignore_merges {
            let encoded: String = word.iter().map(|&b| self.byte_chars[b as usize]).collect();
            if let Some(&id) = vocab.ids.get(encoded.as_str()) {
                out.push(id);
                return;
            }
        }
        if self.cache.extend_from(word, out) {
            return;
        }
        let start = out.len();
        if word.len() <= SHORT_WORD {
            self.merge_short(word, scratch, out);
        } else {
            self.merge_long(word, scratch, out);
        }
        self.cache.insert(word, &out[start..]);
    }

    /// The merge loop for short words: the candidate pairs in an array,
    /// the best one found by a scan. Same order as [`Self::merge_long`]
    /// (lowest rank, then leftmost), without the heap's overhead.
    fn merge_short(&self, word: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        let ids = &mut scratch.ids;
        let pairs = &mut scratch.pairs;
        ids.clear();
        ids.extend(word.iter().map(|&b| self.byte_tokens[b as usize]));
        pairs.clear();
        pairs.extend(ids.windows(2).map(|w| self.pair(w[0], w[1])));
        loop {
            let mut best: Option<(usize, u32, u32)> = None;
            for (i, pair) in pairs.iter().enumerate() {
                if let Some((rank, merged)) = *pair
                    && best.is_none_or(|(_, best_rank, _)| rank < best_rank)
                {
                    best = Some((i, rank, merged));
                }
            }
            let Some((i, _, merged)) = best else {
                break;
            };
            ids[i] = Some(merged);
            ids.remove(i + 1);
            pairs.remove(i);
            if i > 0 {
                pairs[i - 1] = self.pair(ids[i - 1], ids[i]);
            }
            if i < pairs.len() {
                pairs[i] = self.pair(ids[i], ids[i + 1]);
            }
        }
        // A byte without a token of its own produces nothing, as in llama.cpp.
        out.extend(ids.iter().flatten());
    }

    fn pair(&self, left: Option<u32>, right: Option<u32>) -> Option<(u32, u32)> {
        self.merges.get(left?, right?)
    }

    /// The merge loop for long words: a linked list of symbols and a heap
    /// of candidate pairs, O(n log n).
    fn merge_long(&self, word: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        let symbols = &mut scratch.symbols;
        let heap = &mut scratch.heap;
        symbols.clear();
        heap.clear();
        let n = word.len();
        symbols.extend(word.iter().enumerate().map(|(i, &b)| Symbol {
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == n { NONE } else { i + 1 },
            alive: true,
            id: self.byte_tokens[b as usize],
        }));
        for left in 1..n {
            self.push_pair(symbols, heap, left - 1);
        }

        while let Some(Reverse((_, left, left_id, right_id, merged))) = heap.pop() {
            let l = symbols[left];
            if !l.alive || l.id != Some(left_id) || l.next == NONE {
                continue;
            }
            let right = l.next;
            let r = symbols[right];
            if r.id != Some(right_id) {
                continue;
            }
            symbols[left].id = Some(merged);
            symbols[left].next = r.next;
            symbols[right].alive = false;
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
        if let Some((rank, merged)) = self.merges.get(left_id, right_id) {
            heap.push(Reverse((rank, left, left_id, right_id, merged)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::vocab::SpecialDefaults;
    use candle_core::quantized::gguf_file::Value;

    /// A vocabulary of the 256 byte characters plus random merges over a
    /// small alphabet (many overlapping candidates, many rank ties avoided
    /// only by position).
    fn random_model(seed: u64) -> (Vocab, BpeModel) {
        let mut state = seed;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let table = byte_to_char_table();
        let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
        let mut pool: Vec<String> = "abcĠ".chars().map(|c| c.to_string()).collect();
        let mut merges = Vec::new();
        while merges.len() < 300 {
            let left = pool[(next() % pool.len() as u64) as usize].clone();
            let right = pool[(next() % pool.len() as u64) as usize].clone();
            let joined = format!("{left}{right}");
            if joined.chars().count() > 8 || tokens.contains(&joined) {
                continue;
            }
            merges.push(format!("{left} {right}"));
            tokens.push(joined.clone());
            pool.push(joined);
        }
        let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
        let md: Metadata = [
            (keys::TOKENS.to_owned(), strings(tokens)),
            (keys::MERGES.to_owned(), strings(merges)),
        ]
        .into_iter()
        .collect();
        let defaults = SpecialDefaults {
            bos: None,
            eos: None,
            unk: None,
            add_bos: false,
        };
        let vocab = Vocab::from_metadata(&md, defaults).unwrap();
        let pre = PreTokenizer::for_name(Some("gpt-2")).unwrap();
        let model = BpeModel::new(&md, &vocab, pre).unwrap();
        (vocab, model)
    }

    #[test]
    fn short_and_long_merge_loops_agree() {
        for seed in 1..=8u64 {
            let (_, model) = random_model(seed);
            let mut state = seed * 7919;
            let mut scratch = Scratch::default();
            for _ in 0..500 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let len = 1 + (state >> 33) as usize % 120;
                let word: Vec<u8> = (0..len)
                    .map(|i| b"abc "[((state >> (i % 29)) as usize + i * 7) % 4])
                    .collect();
                let (mut short, mut long) = (Vec::new(), Vec::new());
                model.merge_short(&word, &mut scratch, &mut short);
                model.merge_long(&word, &mut scratch, &mut long);
                assert_eq!(
                    short,
                    long,
                    "seed {seed} word {:?}",
                    String::from_utf8_lossy(&word)
                );
            }
        }
    }

    #[test]
    fn cached_words_give_the_same_ids() {
        let (vocab, model) = random_model(42);
        let text = "abc cab bca abc cab aaaa bbbb abc";
        let mut first = Vec::new();
        model.encode(&vocab, text, &mut first).unwrap();
        let mut second = Vec::new();
        model.encode(&vocab, text, &mut second).unwrap();
        assert_eq!(first, second);
        let fresh = model.clone();
        let mut third = Vec::new();
        fresh.encode(&vocab, text, &mut third).unwrap();
        assert_eq!(first, third);
    }

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
