//! Training through the swarm's frozen blocks: the protocol a client uses
//! to run a span forward and backward on a server (prompt tuning, as
//! Petals does it), and the limits a server holds training requests to.
//!
//! One request per session of [`TRAIN_METHOD`], so a request is signed
//! and admitted exactly as an inference session is (the P2P layer's
//! signed opening, proof of stake or the public-client rate):
//!
//! * Opening body: version `1`, kind (`0` forward, `1` backward), model
//!   name (u16 length + UTF-8), span start and end (u32 BE), number of
//!   sequences (u16 BE) and each one's rows (u32 BE), prompt rows per block
//!   (u32 BE, `0` without deep prompts), then little-endian f32: every
//!   sequence's hidden states, every block's prompt rows, and for a
//!   backward every sequence's gradient with respect to the span's output.
//! * The server's one frame: `0` and little-endian f32 (a forward: every
//!   sequence's output; a backward: every sequence's input gradient, then
//!   every block's prompt gradient summed over the sequences), or `1` and
//!   the reason it refused (UTF-8).
//!
//! **Recomputation.** A server keeps nothing between requests: a backward
//! request carries the inputs again and the server reruns the forward
//! before going back through it (as Petals' servers do). A training step
//! costs the servers two forward passes and one backward, and any server
//! of the same blocks can answer any request, so a client whose server
//! fails asks another and retries the step. The activations of one
//! sequence live only while the server computes it; their size is bounded
//! by [`TrainLimits::memory_bytes`].
//!
//! Decoding is bounded by the input and rejects trailing bytes.

use crate::error::{InferenceError, Result};

/// The session method of a training request.
pub const TRAIN_METHOD: &str = "inference.train";
const VERSION: u8 = 1;
/// Most blocks a request's span may have.
const MAX_SPAN_BLOCKS: u32 = 4096;
/// Largest request a client sends: below the P2P layer's frame limit
/// (8 MiB); a bigger batch is split to fit.
pub const MAX_REQUEST_BYTES: usize = 7 << 20;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainKind {
    /// The span's outputs.
    Forward,
    /// The gradients with respect to the inputs and prompts.
    Backward,
}

/// One training request for a span.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRequest {
    /// Forward or backward.
    pub kind: TrainKind,
    /// The model's name in DHT keys.
    pub model: String,
    /// First block of the span.
    pub start: u32,
    /// One past its last block.
    pub end: u32,
    /// Each sequence's hidden states entering the span (`rows * hidden`).
    pub inputs: Vec<Vec<f32>>,
    /// Each block's deep prompt (`prompt_rows * hidden`), or none.
    pub prompts: Vec<Vec<f32>>,
    /// For a backward: each sequence's gradient with respect to the span's
    /// output (same shapes as `inputs`).
    pub grad_outputs: Vec<Vec<f32>>,
}

/// Bounds on what one request may ask of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainLimits {
    /// Most sequences in one request.
    pub max_sequences: usize,
    /// Most positions of one sequence.
    pub max_positions: usize,
    /// Most rows of all sequences together.
    pub max_rows: usize,
    /// Most bytes one request may need: the span's weights in f32 (made
    /// for the request and dropped after it,
    /// `BlockSpan::training_weight_bytes`) and one sequence's activations
    /// (`BlockSpan::tape_len`).
    pub memory_bytes: usize,
}

impl Default for TrainLimits {
    /// 32 sequences of up to 512 positions, 1,024 rows in all, 1 GiB of
    /// f32 weights and activations.
    fn default() -> Self {
        Self {
            max_sequences: 32,
            max_positions: 512,
            max_rows: 1024,
            memory_bytes: 1 << 30,
        }
    }
}

fn malformed(reason: impl Into<String>) -> InferenceError {
    InferenceError::Malformed {
        what: "training request",
        reason: reason.into(),
    }
}

fn push_f32s(values: &[f32], out: &mut Vec<u8>) {
    values
        .iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
}

/// A bounded reader of a request's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(malformed(format!("ends inside {what}")));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
        let bytes = n
            .checked_mul(4)
            .ok_or_else(|| malformed(format!("{what} too large")))?;
        let values: Vec<f32> = self
            .take(bytes, what)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(malformed(format!(
                "{what} holds the non-finite value {bad}"
            )));
        }
        Ok(values)
    }
}

impl TrainRequest {
    /// The opening body, for vectors of rows of width `hidden`. A model
    /// name or a batch the format cannot carry is an error.
    pub fn encode(&self, hidden: usize) -> Result<Vec<u8>> {
        let width = hidden.max(1);
        let name_len = u16::try_from(self.model.len())
            .map_err(|_| malformed("a model name longer than 65,535 bytes"))?;
        let count = u16::try_from(self.inputs.len())
            .map_err(|_| malformed("more than 65,535 sequences"))?;
        let mut out = vec![
            VERSION,
            match self.kind {
                TrainKind::Forward => 0,
                TrainKind::Backward => 1,
            },
        ];
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(self.model.as_bytes());
        out.extend_from_slice(&self.start.to_be_bytes());
        out.extend_from_slice(&self.end.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        for input in &self.inputs {
            out.extend_from_slice(&((input.len() / width) as u32).to_be_bytes());
        }
        let prompt_rows = self.prompts.first().map_or(0, |p| p.len() / width);
        out.extend_from_slice(&(prompt_rows as u32).to_be_bytes());
        for v in self
            .inputs
            .iter()
            .chain(&self.prompts)
            .chain(&self.grad_outputs)
        {
            push_f32s(v, &mut out);
        }
        Ok(out)
    }

    /// Reads an opening body of vectors of width `hidden`, within
    /// `limits`: a request beyond them is refused by name. (Whether its
    /// model and span are the server's is the server's check.)
    pub fn decode(bytes: &[u8], hidden: usize, limits: &TrainLimits) -> Result<Self> {
        let mut r = Reader(bytes);
        let version = r.u8("the version")?;
        if version != VERSION {
            return Err(malformed(format!(
                "version {version}; this server speaks {VERSION}"
            )));
        }
        let kind = match r.u8("the kind")? {
            0 => TrainKind::Forward,
            1 => TrainKind::Backward,
            other => return Err(malformed(format!("unknown kind {other}"))),
        };
        let len = r.u16("the model name")? as usize;
        let model = String::from_utf8(r.take(len, "the model name")?.to_vec())
            .map_err(|_| malformed("the model name is not UTF-8"))?;
        let start = r.u32("the span")?;
        let end = r.u32("the span")?;
        let blocks =
            end.checked_sub(start)
                .filter(|b| (1..=MAX_SPAN_BLOCKS).contains(b))
                .ok_or_else(|| malformed(format!("the span {start}..{end}")))? as usize;
        let count = r.u16("the sequence count")? as usize;
        if count == 0 || count > limits.max_sequences {
            return Err(malformed(format!(
                "{count} sequences; a request holds 1 to {}",
                limits.max_sequences
            )));
        }
        let mut rows = Vec::with_capacity(count);
        for _ in 0..count {
            let n = r.u32("the sequence lengths")? as usize;
            if n == 0 || n > limits.max_positions {
                return Err(malformed(format!(
                    "a sequence of {n} positions; at most {} are trained on",
                    limits.max_positions
                )));
            }
            rows.push(n);
        }
        let total: usize = rows.iter().sum();
        if total > limits.max_rows {
            return Err(malformed(format!(
                "{total} rows in all; a request holds at most {}",
                limits.max_rows
            )));
        }
        let prompt_rows = r.u32("the prompt rows")? as usize;
        if prompt_rows > rows.iter().copied().min().unwrap_or(0) {
            return Err(malformed(format!(
                "prompts of {prompt_rows} rows are longer than a sequence"
            )));
        }
        let inputs = rows
            .iter()
            .map(|n| r.f32s(n * hidden, "the hidden states"))
            .collect::<Result<Vec<_>>>()?;
        let prompts = if prompt_rows == 0 {
            Vec::new()
        } else {
            (0..blocks)
                .map(|_| r.f32s(prompt_rows * hidden, "the prompts"))
                .collect::<Result<Vec<_>>>()?
        };
        let grad_outputs = match kind {
            TrainKind::Forward => Vec::new(),
            TrainKind::Backward => rows
                .iter()
                .map(|n| r.f32s(n * hidden, "the output gradients"))
                .collect::<Result<Vec<_>>>()?,
        };
        if !r.0.is_empty() {
            return Err(malformed(format!("{} bytes after the request", r.0.len())));
        }
        Ok(Self {
            kind,
            model,
            start,
            end,
            inputs,
            prompts,
            grad_outputs,
        })
    }
}

/// The server's answer: vectors in the order the protocol gives, or why it
/// refused.
pub fn encode_train_reply(outcome: std::result::Result<&[Vec<f32>], &str>) -> Vec<u8> {
    match outcome {
        Ok(vectors) => {
            let mut out = vec![0];
            for v in vectors {
                push_f32s(v, &mut out);
            }
            out
        }
        Err(reason) => {
            let mut out = vec![1];
            out.extend_from_slice(reason.as_bytes());
            out
        }
    }
}

/// Reads a server's answer into vectors of the given lengths, or the
/// server's refusal as [`InferenceError::Refused`]-like text.
pub fn decode_train_reply(
    bytes: &[u8],
    lengths: &[usize],
) -> Result<std::result::Result<Vec<Vec<f32>>, String>> {
    let Some((&tag, rest)) = bytes.split_first() else {
        return Err(malformed("an empty answer"));
    };
    match tag {
        0 => {
            let mut r = Reader(rest);
            let vectors = lengths
                .iter()
                .map(|n| r.f32s(*n, "the answer"))
                .collect::<Result<Vec<_>>>()?;
            if !r.0.is_empty() {
                return Err(malformed(format!("{} bytes after the answer", r.0.len())));
            }
            Ok(Ok(vectors))
        }
        1 => Ok(Err(String::from_utf8_lossy(rest).into_owned())),
        other => Err(malformed(format!("unknown answer tag {other}"))),
    }
}

/// Sends `request` (vectors of rows of width `hidden`) to the server
/// `peer` and returns its answer: a forward's outputs per sequence, or a
/// backward's input gradients per sequence followed by each block's
/// summed prompt gradient. A refusal comes back as
/// [`InferenceError::Refused`] with the server's reason; a server that
/// fails or answers nonsense, as [`InferenceError::ServerFailed`].
pub async fn remote_train(
    p2p: &hypertensor_p2p::Client,
    peer: hypertensor_p2p::PeerId,
    request: &TrainRequest,
    hidden: usize,
    timeout: std::time::Duration,
) -> Result<Vec<Vec<f32>>> {
    let failed = |reason: String| InferenceError::ServerFailed { peer, reason };
    let exchange = async {
        let mut session = p2p
            .open_session(peer, TRAIN_METHOD, request.encode(hidden)?)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let reply = session
            .recv()
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed("closed without an answer".into()))?;
        let _ = session.close().await;
        Ok::<_, InferenceError>(reply)
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("no answer in {timeout:?}")))??;
    let mut lengths: Vec<usize> = request.inputs.iter().map(Vec::len).collect();
    if request.kind == TrainKind::Backward {
        lengths.extend(request.prompts.iter().map(Vec::len));
    }
    match decode_train_reply(&reply, &lengths).map_err(|e| failed(e.to_string()))? {
        Ok(vectors) => Ok(vectors),
        Err(reason) => Err(InferenceError::Refused { peer, reason }),
    }
}
