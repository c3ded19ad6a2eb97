//! Evidence that a hoster served wrong outputs (verified serving).
//!
//! Every answer a block server gives to a step of a span session carries a
//! [`Receipt`] signature: the server's Ed25519 signature over the session
//! (client and opening nonce), the span, the step, the digest of every input
//! the session received so far ([`Transcript`]) and the digest of the output
//! it sent ([`output_digest`]: a hash of its rows' hashes, so one row can
//! be shown without the others). Two servers that signed the same
//! transcript digest received the same inputs in the same steps, so an
//! honest pair must answer alike.
//!
//! An [`Evidence`] record holds the accused server's receipt with one row
//! of its output and either
//!
//! * nothing else, when the output convicts on its own: it is not
//!   `n_tokens` rows of the model's width, or a value of the row is not
//!   finite; or
//! * two witnesses: receipts of two other servers for the same transcript,
//!   step and row, whose rows agree with each other within
//!   [`MAX_ROW_DEVIATION`] and from which the accused's row deviates
//!   beyond it (a two-to-one majority of distinct signers).
//!
//! [`Evidence::verify`] checks all of it from the record alone (no model
//! run), so every validator decides the same. A hoster with verified
//! evidence under `evidence/<e>` scores 0 for epoch `e`
//! (`docs/consensus.md`).

use hypertensor_primitives::codec::Encode;
use hypertensor_primitives::{H256, PeerId, Signature, sha256};

use crate::reader::Reader;
use crate::{Error, Result};

/// Signing purpose of a server's receipt for a step.
pub const RECEIPT_PURPOSE: &str = "inference-step";

/// Largest relative deviation, per row, between two honest outputs of the
/// same step: `‖a_r − b_r‖₂ ≤ 0.01 · max(‖a_r‖₂, ‖b_r‖₂) + 1e-6`.
///
/// Honest servers run the same engine on the same weights and inputs; what
/// may still differ is rounding: the kernel path (AVX2 or portable, with
/// other summation orders) and the wire's f16 encoding, which rounds each
/// value by at most 2⁻¹¹ ≈ 4.9e-4 of itself, so a row by at most that
/// relative norm. 0.01 is 20 times that bound; a hoster adding noise or
/// computing in a cheaper precision moves rows by far more (measured in
/// `docs/benchmarks.md`).
pub const MAX_ROW_DEVIATION: f64 = 0.01;

/// Largest row a receipt may carry in evidence (bytes): the widest
/// supported hidden state in f32.
pub const MAX_ROW_BYTES: usize = 16_384 * 4;
/// Most rows a receipt's output may list (a step's tokens).
pub const MAX_ROWS: usize = 4096;
/// Longest model name in a receipt.
const MAX_MODEL_NAME: usize = 128;
/// Longest peer id (an identity multihash of an Ed25519 key is 38 bytes).
const MAX_PEER_ID: usize = 64;

/// How hidden states are encoded on the wire (the session's dtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Little-endian f32.
    F32,
    /// Little-endian IEEE f16.
    F16,
}

impl Encoding {
    /// The wire tag (0 f32, 1 f16).
    pub fn tag(self) -> u8 {
        match self {
            Encoding::F32 => 0,
            Encoding::F16 => 1,
        }
    }

    /// The encoding of a wire tag.
    pub fn from_tag(tag: u8) -> Result<Self> {
        match tag {
            0 => Ok(Encoding::F32),
            1 => Ok(Encoding::F16),
            t => Err(Error::Invalid {
                field: "encoding",
                reason: format!("unknown tag {t}"),
            }),
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Encoding::F32 => 4,
            Encoding::F16 => 2,
        }
    }

    /// The values of `bytes` (a whole number of values).
    pub fn decode(self, bytes: &[u8]) -> Option<Vec<f32>> {
        if !bytes.len().is_multiple_of(self.size()) {
            return None;
        }
        Some(match self {
            Encoding::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Encoding::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        })
    }
}

/// IEEE half to single precision (exact), without a dependency.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            let frac = (f << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (frac << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// The running digest of the inputs a span session's cache holds: a
/// server and a client (or a second server the inputs are replayed to)
/// that fed the same steps hold the same digest.
///
/// `d₀ = SHA-256("hypertensor-transcript" ‖ model ‖ start ‖ end ‖ tag)`;
/// a step at `position` first drops the steps at or after `position` (the
/// cache rewinds to it), then
/// `dₖ = SHA-256(dₖ₋₁ ‖ position u32 ‖ n_tokens u32 ‖ SHA-256(input bytes))`.
/// So a step sent twice (pushed, then relayed when the push was late)
/// counts once, as it does in the server's cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    base: H256,
    /// Each step in the cache: its position and the digest after it.
    steps: Vec<(u32, H256)>,
}

impl Transcript {
    /// The digest of a session on `model`'s blocks `start..end` before any
    /// step.
    pub fn new(model: &str, start: u32, end: u32, encoding: Encoding) -> Self {
        let mut head = Vec::new();
        "hypertensor-transcript".encode_to(&mut head);
        model.encode_to(&mut head);
        start.encode_to(&mut head);
        end.encode_to(&mut head);
        head.push(encoding.tag());
        Transcript {
            base: sha256(&[&head]),
            steps: Vec::new(),
        }
    }

    /// The transcript of a session whose blocks add deep prompt rows at
    /// its first positions, `prompts` their digest: it is part of every
    /// input digest after, so receipts of sessions given other prompts
    /// (or none) never count as answers to the same inputs.
    pub fn with_prompts(mut self, prompts: &H256) -> Self {
        let mut fields = Vec::with_capacity(64);
        self.base.encode_to(&mut fields);
        "prompts".encode_to(&mut fields);
        prompts.encode_to(&mut fields);
        self.base = sha256(&[&fields]);
        self
    }

    /// Takes in one step's inputs (the hidden states as encoded on the wire).
    pub fn step(&mut self, position: u32, n_tokens: u32, input: &[u8]) {
        self.step_hashed(position, n_tokens, sha256(&[input]));
    }

    /// [`Transcript::step`] with the inputs' SHA-256 already computed.
    pub fn step_hashed(&mut self, position: u32, n_tokens: u32, input_hash: H256) {
        while self.steps.last().is_some_and(|(p, _)| *p >= position) {
            self.steps.pop();
        }
        let mut fields = Vec::with_capacity(32 + 8 + 32);
        self.digest().encode_to(&mut fields);
        position.encode_to(&mut fields);
        n_tokens.encode_to(&mut fields);
        input_hash.encode_to(&mut fields);
        self.steps.push((position, sha256(&[&fields])));
    }

    /// The digest so far.
    pub fn digest(&self) -> H256 {
        self.steps.last().map_or(self.base, |(_, d)| *d)
    }
}

/// The digest a server signs for an output of `row_len`-byte rows: SHA-256
/// of the concatenated SHA-256 of each row (a last row shorter than
/// `row_len` is hashed as it is). Returns the rows' hashes and the digest.
pub fn output_digest(output: &[u8], row_len: usize) -> (Vec<H256>, H256) {
    let rows: Vec<H256> = output
        .chunks(row_len.max(1))
        .map(|row| sha256(&[row]))
        .collect();
    let digest = digest_of_rows(&rows);
    (rows, digest)
}

fn digest_of_rows(rows: &[H256]) -> H256 {
    let mut all = Vec::with_capacity(rows.len() * 32);
    for row in rows {
        all.extend_from_slice(&row.0);
    }
    sha256(&[&all])
}

/// The fields a server signs for one answer.
#[derive(Clone, Copy, Debug)]
pub struct ReceiptFields<'a> {
    /// The client that opened the session.
    pub client: &'a PeerId,
    /// The nonce of the session's signed opening request.
    pub session: &'a [u8; 16],
    /// The model's name.
    pub model: &'a str,
    /// First block of the span.
    pub start: u32,
    /// One past the last block.
    pub end: u32,
    /// How the hidden states were encoded.
    pub encoding: Encoding,
    /// Positions in the sequence before the step.
    pub position: u32,
    /// Rows of the step.
    pub n_tokens: u32,
    /// The session's [`Transcript`] digest after this step's inputs.
    pub inputs: &'a H256,
    /// The [`output_digest`] of the output sent.
    pub output: &'a H256,
}

impl ReceiptFields<'_> {
    /// The server's signature over these fields in `genesis`'s domain.
    pub fn sign(&self, keypair: &hypertensor_primitives::Keypair, genesis: &H256) -> Signature {
        keypair.sign_domain(RECEIPT_PURPOSE, genesis, &self.signed_payload())
    }

    /// The bytes a server signs (before domain separation).
    pub fn signed_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        self.client.encode_to(&mut out);
        self.session.encode_to(&mut out);
        self.model.encode_to(&mut out);
        self.start.encode_to(&mut out);
        self.end.encode_to(&mut out);
        out.push(self.encoding.tag());
        self.position.encode_to(&mut out);
        self.n_tokens.encode_to(&mut out);
        self.inputs.encode_to(&mut out);
        self.output.encode_to(&mut out);
        out
    }
}

/// A server's signed answer to one step, with one row of the output shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The server (an Ed25519 peer id: its key checks the signature).
    pub server: PeerId,
    /// The client that opened the session.
    pub client: PeerId,
    /// The nonce of the session's signed opening request.
    pub session: [u8; 16],
    /// The model's name.
    pub model: String,
    /// First block of the span.
    pub start: u32,
    /// One past the last block.
    pub end: u32,
    /// How the hidden states were encoded.
    pub encoding: Encoding,
    /// Positions in the sequence before the step.
    pub position: u32,
    /// Rows of the step.
    pub n_tokens: u32,
    /// The session's [`Transcript`] digest after this step's inputs.
    pub inputs: H256,
    /// The hash of each row of the output as sent.
    pub rows: Vec<H256>,
    /// Which row is shown.
    pub row: u32,
    /// That row's bytes.
    pub row_bytes: Vec<u8>,
    /// The server's signature (purpose [`RECEIPT_PURPOSE`]).
    pub signature: Signature,
}

impl Receipt {
    /// Checks the signature under the server's key in `genesis`'s domain,
    /// and that the row shown is the one whose hash was signed.
    pub fn verify_signature(&self, genesis: &H256) -> Result<()> {
        let key = self
            .server
            .ed25519_public_key()
            .ok_or_else(|| Error::Invalid {
                field: "receipt server",
                reason: "not an Ed25519 peer id".into(),
            })?;
        // The row shown is one signed; an empty output shows nothing.
        let shown_ok = match self.rows.get(self.row as usize) {
            Some(hash) => *hash == sha256(&[&self.row_bytes]),
            None => self.rows.is_empty() && self.row == 0 && self.row_bytes.is_empty(),
        };
        if !shown_ok {
            return Err(Error::Invalid {
                field: "receipt row",
                reason: format!(
                    "the bytes shown are not row {} of the {} signed",
                    self.row,
                    self.rows.len()
                ),
            });
        }
        let output = digest_of_rows(&self.rows);
        let fields = ReceiptFields {
            client: &self.client,
            session: &self.session,
            model: &self.model,
            start: self.start,
            end: self.end,
            encoding: self.encoding,
            position: self.position,
            n_tokens: self.n_tokens,
            inputs: &self.inputs,
            output: &output,
        };
        key.verify_domain(
            RECEIPT_PURPOSE,
            genesis,
            &fields.signed_payload(),
            &self.signature,
        )
        .map_err(|_| Error::Invalid {
            field: "receipt signature",
            reason: format!("does not verify under {}", self.server),
        })
    }

    /// Whether `other` answered the same step of the same inputs and shows
    /// the same row.
    fn same_step(&self, other: &Receipt) -> bool {
        self.model == other.model
            && self.start == other.start
            && self.end == other.end
            && self.encoding == other.encoding
            && self.position == other.position
            && self.n_tokens == other.n_tokens
            && self.inputs == other.inputs
            && self.row == other.row
    }

    /// The row shown, if the output is `n_tokens` rows and the row is
    /// `width` finite values; else why not.
    pub fn shown_row(&self, width: usize) -> std::result::Result<Vec<f32>, String> {
        if self.rows.len() != self.n_tokens as usize {
            return Err(format!(
                "{} rows for a step of {}",
                self.rows.len(),
                self.n_tokens
            ));
        }
        let values = self
            .encoding
            .decode(&self.row_bytes)
            .filter(|v| v.len() == width)
            .ok_or_else(|| format!("row of {} bytes for width {width}", self.row_bytes.len()))?;
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!("value {at} of the row is {}", values[at]));
        }
        Ok(values)
    }

    fn encode_to(&self, out: &mut Vec<u8>) {
        self.server.encode_to(out);
        self.client.encode_to(out);
        self.session.encode_to(out);
        self.model.encode_to(out);
        self.start.encode_to(out);
        self.end.encode_to(out);
        out.push(self.encoding.tag());
        self.position.encode_to(out);
        self.n_tokens.encode_to(out);
        self.inputs.encode_to(out);
        self.rows.encode_to(out);
        self.row.encode_to(out);
        self.row_bytes.encode_to(out);
        self.signature.0.encode_to(out);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Receipt> {
        let peer = |r: &mut Reader<'_>, field: &'static str| -> Result<PeerId> {
            let len = r.count(field, MAX_PEER_ID)?;
            PeerId::from_bytes(&r.bytes(len, field)?).map_err(|e| Error::Invalid {
                field,
                reason: e.to_string(),
            })
        };
        let server = peer(r, "receipt server")?;
        let client = peer(r, "receipt client")?;
        let session = r.take::<16>("receipt session")?;
        let len = r.count("receipt model", MAX_MODEL_NAME)?;
        let model =
            String::from_utf8(r.bytes(len, "receipt model")?).map_err(|_| Error::Invalid {
                field: "receipt model",
                reason: "not UTF-8".into(),
            })?;
        let start = r.u32("receipt start")?;
        let end = r.u32("receipt end")?;
        let encoding = Encoding::from_tag(r.take::<1>("receipt encoding")?[0])?;
        let position = r.u32("receipt position")?;
        let n_tokens = r.u32("receipt rows")?;
        let inputs = H256(r.take::<32>("receipt inputs")?);
        let count = r.count("receipt row hashes", MAX_ROWS)?;
        let rows = (0..count)
            .map(|_| r.take::<32>("receipt row hash").map(H256))
            .collect::<Result<Vec<_>>>()?;
        let row = r.u32("receipt row")?;
        let len = r.count("receipt row bytes", MAX_ROW_BYTES)?;
        let row_bytes = r.bytes(len, "receipt row bytes")?;
        let signature = Signature(r.take::<64>("receipt signature")?);
        Ok(Receipt {
            server,
            client,
            session,
            model,
            start,
            end,
            encoding,
            position,
            n_tokens,
            inputs,
            rows,
            row,
            row_bytes,
            signature,
        })
    }
}

/// A claim that one server served a wrong output, with what proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The accused server's receipt.
    pub accused: Receipt,
    /// None (the output convicts on its own) or two other servers' receipts
    /// for the same inputs, step and row.
    pub witnesses: Vec<Receipt>,
}

/// Whether row `a` deviates from row `b` beyond rounding (see
/// [`MAX_ROW_DEVIATION`]), computed in f64 in index order.
pub fn rows_disagree(a: &[f32], b: &[f32]) -> bool {
    if a.len() != b.len() {
        return true;
    }
    let (mut diff, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        diff += (x - y) * (x - y);
        na += x * x;
        nb += y * y;
    }
    let bound = MAX_ROW_DEVIATION * na.sqrt().max(nb.sqrt()) + 1e-6;
    // A NaN anywhere disagrees (it compares as neither within nor beyond).
    diff.sqrt()
        .partial_cmp(&bound)
        .is_none_or(|order| order == std::cmp::Ordering::Greater)
}

/// The first row (of `width` values) where two outputs disagree beyond
/// rounding, if any (outputs of different lengths disagree at the first
/// row past the shorter).
pub fn first_disagreement(a: &[f32], b: &[f32], width: usize) -> Option<usize> {
    let width = width.max(1);
    let rows = a.len().max(b.len()).div_ceil(width);
    (0..rows).find(|&r| {
        let row = |v: &[f32]| {
            v.get(r * width..((r + 1) * width).min(v.len()))
                .unwrap_or(&[])
                .to_vec()
        };
        rows_disagree(&row(a), &row(b))
    })
}

impl Evidence {
    /// Checks the evidence for `model` (of hidden size `width`) in
    /// `genesis`'s signing domain: every signature, one step and row of one
    /// transcript of that model, distinct servers, and either a
    /// self-convicting output or two agreeing witnesses the accused
    /// disagrees with. Returns the accused server. Who the servers are is
    /// the caller's to check: a conviction counts only when the accused
    /// and both witnesses are the subnet's scored nodes
    /// ([`Evidence::servers`]).
    pub fn verify(&self, genesis: &H256, model: &str, width: usize) -> Result<&PeerId> {
        let invalid = |reason: String| Error::Invalid {
            field: "evidence",
            reason,
        };
        if self.accused.model != model {
            return Err(invalid(format!(
                "receipts for model `{}`, not `{model}`",
                self.accused.model
            )));
        }
        self.accused.verify_signature(genesis)?;
        for w in &self.witnesses {
            w.verify_signature(genesis)?;
            if !w.same_step(&self.accused) {
                return Err(invalid(format!(
                    "witness {} answered another step or other inputs, or shows another row",
                    w.server
                )));
            }
        }
        let accused = &self.accused.server;
        match self.witnesses.as_slice() {
            [] => match self.accused.shown_row(width) {
                Err(_) => Ok(accused),
                Ok(_) => Err(invalid(
                    "no witnesses, and the output is well-formed and finite".into(),
                )),
            },
            [a, b] => {
                if a.server == b.server || &a.server == accused || &b.server == accused {
                    return Err(invalid("the three servers are not distinct".into()));
                }
                let wa = a
                    .shown_row(width)
                    .map_err(|e| invalid(format!("witness {}: {e}", a.server)))?;
                let wb = b
                    .shown_row(width)
                    .map_err(|e| invalid(format!("witness {}: {e}", b.server)))?;
                if rows_disagree(&wa, &wb) {
                    return Err(invalid("the witnesses disagree with each other".into()));
                }
                match self.accused.shown_row(width) {
                    Err(_) => Ok(accused),
                    Ok(row) if rows_disagree(&row, &wa) && rows_disagree(&row, &wb) => Ok(accused),
                    Ok(_) => Err(invalid("the accused's row agrees with a witness".into())),
                }
            }
            other => Err(invalid(format!(
                "{} witnesses (0 or 2 expected)",
                other.len()
            ))),
        }
    }

    /// Every server the evidence names: the accused, then the witnesses.
    pub fn servers(&self) -> impl Iterator<Item = &PeerId> {
        std::iter::once(&self.accused.server).chain(self.witnesses.iter().map(|w| &w.server))
    }

    /// The record's bytes: version 1, the accused's receipt, the witness
    /// count (`u32`) and their receipts.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        self.accused.encode_to(&mut out);
        (self.witnesses.len() as u32).encode_to(&mut out);
        for w in &self.witnesses {
            w.encode_to(&mut out);
        }
        out
    }

    /// Parses a record (bounded: at most two witnesses, [`MAX_ROWS`] row
    /// hashes and a row of [`MAX_ROW_BYTES`] each).
    pub fn decode(bytes: &[u8]) -> Result<Evidence> {
        let mut r = Reader::new(bytes);
        let version = r.take::<1>("evidence version")?[0];
        if version != 1 {
            return Err(Error::Invalid {
                field: "evidence version",
                reason: format!("{version}"),
            });
        }
        let accused = Receipt::decode(&mut r)?;
        let count = r.count("evidence witnesses", 2)?;
        let witnesses = (0..count)
            .map(|_| Receipt::decode(&mut r))
            .collect::<Result<Vec<_>>>()?;
        r.finish()?;
        Ok(Evidence { accused, witnesses })
    }
}

/// Most pieces of evidence one writer files under one epoch's key.
pub const MAX_EVIDENCE_PER_RECORD: usize = 8;
/// Largest `evidence/<e>` value accepted (below the DHT's 1 MiB values).
pub const MAX_EVIDENCE_BYTES: usize = (1 << 20) - 4096;

/// The value a writer files under `evidence/<e>`: a `u32` count, then
/// each piece of evidence as a `u32` length and its bytes. A writer has
/// one entry per key, so it files every piece it holds for the epoch.
pub fn encode_evidence_record(pieces: &[Evidence]) -> Vec<u8> {
    let mut out = Vec::new();
    (pieces.len() as u32).encode_to(&mut out);
    for piece in pieces {
        piece.encode().encode_to(&mut out);
    }
    out
}

/// Parses an `evidence/<e>` value (at most [`MAX_EVIDENCE_PER_RECORD`]
/// pieces).
pub fn decode_evidence_record(bytes: &[u8]) -> Result<Vec<Evidence>> {
    let mut r = Reader::new(bytes);
    let count = r.count("evidence count", MAX_EVIDENCE_PER_RECORD)?;
    let mut pieces = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.count("evidence length", MAX_EVIDENCE_BYTES)?;
        pieces.push(Evidence::decode(&r.bytes(len, "evidence")?)?);
    }
    r.finish()?;
    Ok(pieces)
}

/// Checks every piece of an `evidence/<e>` value for `model` (see
/// [`Evidence::verify`]); returns the pieces.
pub fn verify_evidence_record(
    bytes: &[u8],
    genesis: &H256,
    model: &str,
    width: usize,
) -> Result<Vec<Evidence>> {
    let pieces = decode_evidence_record(bytes)?;
    for piece in &pieces {
        piece.verify(genesis, model, width)?;
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests;
