//! Turning token ids back into text, all at once or one token at a time.
//!
//! Each token's bytes are computed once when the tokenizer is built
//! ([`Pieces`]). Decoding concatenates them and reads the bytes as UTF-8,
//! replacing invalid sequences with U+FFFD exactly as
//! [`String::from_utf8_lossy`] does; [`TokenStreamDecoder`] does the same
//! incrementally and holds back an incomplete multi-byte character until its
//! last byte arrives, so streaming and whole decoding give the same text.
//!
//! SentencePiece vocabularies put a `▁` before the text at the start and
//! after each special token (see [`super::spm`]); decoding removes that one
//! space again, so `decode(encode(x)) == x`.

use std::collections::HashMap;

use super::Tokenizer;
use super::bpe;
use super::error::{TokenizerError, TokenizerResult};
use super::spm::SPACE;
use super::vocab::{Attr, Vocab};

/// How a token decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceKind {
    /// Text of the vocabulary (normal or byte token).
    Text,
    /// A control or unknown token: its literal text, unless skipped.
    Special,
    /// A user-defined token: its literal text, never skipped.
    UserDefined,
}

/// The decoded bytes of every token.
#[derive(Debug, Clone)]
pub(crate) struct Pieces {
    bytes: Vec<u8>,
    /// `offsets[id]..offsets[id + 1]` is token `id`'s piece.
    offsets: Vec<usize>,
    kinds: Vec<PieceKind>,
    /// Whether a special token resets the SentencePiece leading-space rule.
    strip_prefix_space: bool,
}

/// Which vocabulary style the pieces are decoded from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PieceStyle {
    /// Byte-level BPE: each character stands for a byte.
    ByteLevel,
    /// SentencePiece: `▁` is a space; `add_space_prefix` says whether one
    /// leading space was added by the encoder.
    SentencePiece { add_space_prefix: bool },
}

impl Pieces {
    pub(crate) fn build(vocab: &Vocab, style: PieceStyle) -> Pieces {
        let byte_chars = bpe::byte_to_char_table();
        let char_bytes: HashMap<char, u8> = bpe::char_to_byte_map(&byte_chars);
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(vocab.len() + 1);
        let mut kinds = Vec::with_capacity(vocab.len());
        offsets.push(0);
        for (id, text) in vocab.texts.iter().enumerate() {
            let attr = vocab.attrs[id];
            let kind = if attr.has(Attr::CONTROL | Attr::UNKNOWN) {
                bytes.extend_from_slice(text.as_bytes());
                PieceKind::Special
            } else if attr.has(Attr::USER_DEFINED) {
                bytes.extend_from_slice(text.as_bytes());
                PieceKind::UserDefined
            } else if attr.has(Attr::NORMAL) {
                match style {
                    PieceStyle::ByteLevel => {
                        for c in text.chars() {
                            match char_bytes.get(&c) {
                                Some(&b) => bytes.push(b),
                                // Not a byte character: keep it as it is.
                                None => {
                                    bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes())
                                }
                            }
                        }
                    }
                    PieceStyle::SentencePiece { .. } => {
                        for c in text.chars() {
                            let c = if c == SPACE { ' ' } else { c };
                            bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                    }
                }
                PieceKind::Text
            } else if attr.has(Attr::BYTE) {
                match parse_byte_token(text) {
                    Some(b) => bytes.push(b),
                    None => bytes.extend_from_slice(text.as_bytes()),
                }
                PieceKind::Text
            } else {
                // Unused and undefined tokens decode to nothing, as in llama.cpp.
                PieceKind::Text
            };
            kinds.push(kind);
            offsets.push(bytes.len());
        }
        let strip_prefix_space = matches!(
            style,
            PieceStyle::SentencePiece {
                add_space_prefix: true
            }
        );
        Pieces {
            bytes,
            offsets,
            kinds,
            strip_prefix_space,
        }
    }

    fn piece(&self, id: u32) -> (&[u8], PieceKind) {
        let id = id as usize;
        (
            &self.bytes[self.offsets[id]..self.offsets[id + 1]],
            self.kinds[id],
        )
    }
}

/// Parses a `<0xXX>` byte token.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Decoding state carried from one token to the next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PieceState {
    /// Whether the next text piece loses one leading space.
    strip_space: bool,
}

impl PieceState {
    pub(crate) fn new(pieces: &Pieces) -> PieceState {
        PieceState {
            strip_space: pieces.strip_prefix_space,
        }
    }

    /// Appends token `id`'s bytes to `out`.
    pub(crate) fn append(
        &mut self,
        pieces: &Pieces,
        id: u32,
        skip_special: bool,
        out: &mut Vec<u8>,
    ) -> TokenizerResult<()> {
        let vocab_size = pieces.kinds.len();
        if id as usize >= vocab_size {
            return Err(TokenizerError::TokenIdOutOfRange { id, vocab_size });
        }
        let (bytes, kind) = pieces.piece(id);
        match kind {
            PieceKind::Text => {
                if bytes.is_empty() {
                    // Unused tokens decode to nothing and change nothing.
                    return Ok(());
                }
                let bytes = match bytes.split_first() {
                    Some((b' ', rest)) if self.strip_space => rest,
                    _ => bytes,
                };
                self.strip_space = false;
                out.extend_from_slice(bytes);
            }
            PieceKind::Special | PieceKind::UserDefined => {
                if !(skip_special && kind == PieceKind::Special) {
                    out.extend_from_slice(bytes);
                }
                // The encoder adds a space before text following a special token.
                self.strip_space = pieces.strip_prefix_space;
            }
        }
        Ok(())
    }
}

/// Incremental decoder: feed generated token ids one at a time and get back
/// the text they complete.
///
/// Only complete UTF-8 is returned: when a character's bytes are spread over
/// several tokens, it comes out whole with the token that completes it. The
/// concatenation of every [`push`](Self::push) result and
/// [`finish`](Self::finish) equals [`Tokenizer::decode`] of the same ids
/// with the same `skip_special`.
#[derive(Debug, Clone)]
pub struct TokenStreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    skip_special: bool,
    state: PieceState,
    pending: Vec<u8>,
}

impl<'t> TokenStreamDecoder<'t> {
    /// A decoder over `tokenizer`; with `skip_special`, control tokens
    /// (`<|im_end|>`, ...) produce no text (what user-facing output wants).
    pub fn new(tokenizer: &'t Tokenizer, skip_special: bool) -> TokenStreamDecoder<'t> {
        TokenStreamDecoder {
            tokenizer,
            skip_special,
            state: PieceState::new(&tokenizer.pieces),
            pending: Vec::new(),
        }
    }

    /// Adds one token and returns the text it completes (possibly empty).
    /// An id outside the vocabulary is an error and changes nothing.
    pub fn push(&mut self, id: u32) -> TokenizerResult<String> {
        self.state.append(
            &self.tokenizer.pieces,
            id,
            self.skip_special,
            &mut self.pending,
        )?;
        Ok(take_complete_utf8(&mut self.pending))
    }

    /// Returns whatever is still held back (an unfinished character becomes
    /// U+FFFD) and ends the stream.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

/// Removes and returns the longest prefix of `buf` that can be decoded now:
/// valid UTF-8, with each invalid sequence replaced by U+FFFD; an incomplete
/// character at the end stays in `buf`.
fn take_complete_utf8(buf: &mut Vec<u8>) -> String {
    let mut text = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&buf[start..]) {
            Ok(valid) => {
                text.push_str(valid);
                start = buf.len();
                break;
            }
            Err(error) => {
                let valid_end = start + error.valid_up_to();
                // Safe: from_utf8 validated exactly this range.
                text.push_str(std::str::from_utf8(&buf[start..valid_end]).unwrap_or_default());
                match error.error_len() {
                    Some(invalid) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        start = valid_end + invalid;
                    }
                    None => {
                        start = valid_end;
                        break;
                    }
                }
            }
        }
    }
    buf.drain(..start);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens_parse() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(b'\n'));
        assert_eq!(parse_byte_token("<0xFF>"), Some(0xFF));
        assert_eq!(parse_byte_token("<0x0A"), None);
        assert_eq!(parse_byte_token("a"), None);
    }

    #[test]
    fn incomplete_character_is_held_back_until_complete() {
        let euro = "€".as_bytes();
        let mut buf = euro[..2].to_vec();
        assert_eq!(take_complete_utf8(&mut buf), "");
        buf.push(euro[2]);
        assert_eq!(take_complete_utf8(&mut buf), "€");
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_bytes_become_replacement_like_from_utf8_lossy() {
        let bytes = b"a\xFFb\xE2\x82";
        let mut buf = bytes.to_vec();
        let mut text = take_complete_utf8(&mut buf);
        assert_eq!(text, "a\u{FFFD}b");
        text.push_str(&String::from_utf8_lossy(&buf));
        assert_eq!(text, String::from_utf8_lossy(bytes));
    }
}
