//! The span-session protocol, carried in the P2P layer's session frames.
//!
//! * Opening body: version `4`, model name (u16 length + UTF-8), span
//!   start and end (u32 BE), hidden-state encoding (`0` f32, `1` f16), the
//!   number of token positions to reserve (u32 BE), the session's push
//!   token (16 bytes), and the deep prompt rows its blocks add at the
//!   sequence's first positions: their count per block (u32 BE, `0` for
//!   none), then block after block those rows as little-endian f32. Their
//!   digest ([`SessionPrompts::digest`]) starts the session's transcript,
//!   so receipts name them.
//! * The server's first frame: `0` accepted, or a refusal (tag + reason).
//! * Each step: position (u32 BE, where the sequence stands before it;
//!   smaller than the cache rewinds it), token count (u32 BE), the
//!   forwarding list (a count byte, then per entry a peer id as u8 length +
//!   bytes and that peer's session token), then the hidden states as
//!   little-endian f32 or f16, row after row.
//! * Each answer: `0`, the server's 64-byte receipt signature, the
//!   SHA-256 of the input rows it computed on (so a client whose step was
//!   pushed sees whether the server got what the previous one answered),
//!   then the span's output states in the same encoding; or a refusal. To
//!   a pushed step, `5`, the signature, the input hash and the output
//!   states (a pushed step that is refused gets no answer: the client,
//!   seeing none, relays it). The
//!   signature is the server's over the session, the step, the digest of
//!   every input the session took so far and the digest of this output
//!   (`hypertensor_consensus::evidence::ReceiptFields`), so any answer can
//!   later be shown to others as what this server said.
//!
//! **Push.** A step whose forwarding list is not empty is also sent on by
//! the server, as the next step of the first entry's session: the server
//! opens a [`PUSH_METHOD`] session to that peer (its body: the entry's
//! token) and writes the step there with its own output as the hidden
//! states and the rest of the list. The receiving server runs it as a step
//! of the session holding that token and answers the *client*, so only
//! the last server's output is on the client's critical path. A token is a
//! random capability the client gives to the server it opens the session
//! on and to the one server before it; pushes bearing an unknown token are
//! closed.
//!
//! Decoding is bounded by the input and rejects trailing bytes.

use hypertensor_p2p::PeerId;

use crate::error::{InferenceError, Result};

/// The session method name in the P2P layer.
pub const SESSION_METHOD: &str = "inference.span";
/// The unary method used to measure latency.
pub const PING_METHOD: &str = "inference.ping";
/// The session method a server pushes a session's next steps on.
pub const PUSH_METHOD: &str = "inference.push";
const VERSION: u8 = 4;
/// Most entries of a step's forwarding list (a route longer than this is
/// relayed by the client past its end).
pub const MAX_FORWARD: usize = 32;

/// Most bytes of deep prompt rows a session's opening carries (one P2P
/// frame holds 8 MiB): a client refuses to serve a prompt whose rows for
/// the whole model are more, and a server refuses an opening with more.
pub const MAX_SESSION_PROMPT_BYTES: usize = 6 << 20;

/// A session's push token: who holds it may send that session's steps.
pub type PushToken = [u8; 16];

/// How hidden states travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// Little-endian f32 (lossless).
    F32,
    /// Little-endian IEEE f16 (half the bytes, rounded).
    F16,
}

impl Dtype {
    fn tag(self) -> u8 {
        match self {
            Dtype::F32 => 0,
            Dtype::F16 => 1,
        }
    }

    /// The consensus crate's name for this encoding (receipts sign it).
    pub fn encoding(self) -> hypertensor_consensus::evidence::Encoding {
        match self {
            Dtype::F32 => hypertensor_consensus::evidence::Encoding::F32,
            Dtype::F16 => hypertensor_consensus::evidence::Encoding::F16,
        }
    }

    fn from_tag(tag: u8) -> Result<Self> {
        match tag {
            0 => Ok(Dtype::F32),
            1 => Ok(Dtype::F16),
            t => Err(malformed("session request", format!("unknown dtype {t}"))),
        }
    }

    /// Whether `v` stays finite in this encoding (f16 overflows above
    /// 65504: a finite f32 can be infinite on the wire).
    pub fn carries_finite(self, v: f32) -> bool {
        match self {
            Dtype::F32 => v.is_finite(),
            Dtype::F16 => half::f16::from_f32(v).is_finite(),
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// Appends `values` in this encoding.
    pub fn encode_into(self, values: &[f32], out: &mut Vec<u8>) {
        match self {
            Dtype::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Dtype::F16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        }
    }

    /// Reads values in this encoding; the length must be a whole number.
    pub fn decode(self, bytes: &[u8]) -> Result<Vec<f32>> {
        if !bytes.len().is_multiple_of(self.size()) {
            return Err(malformed("hidden states", format!("{} bytes", bytes.len())));
        }
        Ok(match self {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        })
    }
}

fn malformed(what: &'static str, reason: impl Into<String>) -> InferenceError {
    InferenceError::Malformed {
        what,
        reason: reason.into(),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(malformed(self.what, "truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn token(&mut self) -> Result<PushToken> {
        let mut t = [0u8; 16];
        t.copy_from_slice(self.take(16)?);
        Ok(t)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
    fn end(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(malformed(self.what, "trailing bytes"))
        }
    }
}

/// A client's request to open a session on a span.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenRequest {
    /// The model's name (as announced).
    pub model: String,
    /// First block.
    pub start: u32,
    /// One past the last block.
    pub end: u32,
    /// Encoding of hidden states both ways.
    pub dtype: Dtype,
    /// Token positions to reserve in the server's cache.
    pub max_tokens: u32,
    /// The token a previous server's pushes into this session carry.
    pub token: PushToken,
    /// Deep prompt rows the span's blocks add, if the sequence is tuned.
    pub prompts: Option<SessionPrompts>,
}

/// Deep prompt rows a session's blocks add to their inputs at the
/// sequence's first `rows` positions (deep prompt tuning).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPrompts {
    /// Rows per block.
    pub rows: u32,
    /// Block after block of the span, `rows` rows of the model's width.
    pub values: Vec<f32>,
}

/// The transcript of a session on `model`'s blocks `start..end` in
/// `dtype`, whose blocks add `prompts`: what client, server and spot
/// checker all hash the session's inputs into.
pub fn session_transcript(
    model: &str,
    start: u32,
    end: u32,
    dtype: Dtype,
    prompts: Option<&SessionPrompts>,
) -> hypertensor_consensus::evidence::Transcript {
    let transcript =
        hypertensor_consensus::evidence::Transcript::new(model, start, end, dtype.encoding());
    match prompts {
        Some(p) => transcript.with_prompts(&p.digest()),
        None => transcript,
    }
}

impl SessionPrompts {
    /// SHA-256 of the values as sent: what the session's transcript and
    /// receipts carry for them.
    pub fn digest(&self) -> hypertensor_primitives::H256 {
        let bytes: Vec<u8> = self.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        hypertensor_primitives::sha256(&[&bytes])
    }
}

impl OpenRequest {
    /// The transcript of the session this request opens.
    pub fn transcript(&self) -> hypertensor_consensus::evidence::Transcript {
        session_transcript(
            &self.model,
            self.start,
            self.end,
            self.dtype,
            self.prompts.as_ref(),
        )
    }

    /// The opening body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        let name = self.model.as_bytes();
        let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&name[..usize::from(len)]);
        out.extend_from_slice(&self.start.to_be_bytes());
        out.extend_from_slice(&self.end.to_be_bytes());
        out.push(self.dtype.tag());
        out.extend_from_slice(&self.max_tokens.to_be_bytes());
        out.extend_from_slice(&self.token);
        match &self.prompts {
            Some(p) => {
                out.extend_from_slice(&p.rows.to_be_bytes());
                p.values
                    .iter()
                    .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            }
            None => out.extend_from_slice(&0u32.to_be_bytes()),
        }
        out
    }

    /// Parses an opening body.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader {
            bytes,
            what: "session request",
        };
        let version = r.u8()?;
        if version != VERSION {
            return Err(malformed("session request", format!("version {version}")));
        }
        let len = r.u16()?;
        let model = std::str::from_utf8(r.take(usize::from(len))?)
            .map_err(|_| malformed("session request", "model name is not UTF-8"))?
            .to_string();
        let req = OpenRequest {
            model,
            start: r.u32()?,
            end: r.u32()?,
            dtype: Dtype::from_tag(r.u8()?)?,
            max_tokens: r.u32()?,
            token: r.token()?,
            prompts: None,
        };
        let rows = r.u32()?;
        let rest = r.rest();
        let req = if rows == 0 {
            if !rest.is_empty() {
                return Err(malformed("session request", "prompt values without rows"));
            }
            req
        } else {
            if rest.is_empty() || !rest.len().is_multiple_of(4) {
                return Err(malformed(
                    "session request",
                    format!("{} bytes of prompt values", rest.len()),
                ));
            }
            let values = rest
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            OpenRequest {
                prompts: Some(SessionPrompts { rows, values }),
                ..req
            }
        };
        r.end()?;
        Ok(req)
    }
}

/// Why a server did not serve an opening or a step. The kind tells the
/// client whether the server is at fault (and should be avoided) or merely
/// busy, or whether the request itself was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server does not hold what was asked (another span or model than
    /// it announced): its announcement is wrong.
    #[error("{0}")]
    Unserved(String),
    /// The server's cache budget cannot hold the reservation now; it can
    /// still reserve `free_tokens` positions. Not a fault.
    #[error("cache budget full: {free_tokens} tokens free")]
    Full {
        /// Positions the server can still reserve.
        free_tokens: u64,
    },
    /// The request itself is refused (the consensus challenge, a step
    /// beyond the reservation, a malformed frame): the caller's doing.
    #[error("{0}")]
    Rejected(String),
    /// The server failed to run a valid request.
    #[error("{0}")]
    Failed(String),
}

impl Refusal {
    fn encode(&self) -> Vec<u8> {
        match self {
            Refusal::Unserved(reason) => [&[1u8][..], reason.as_bytes()].concat(),
            Refusal::Full { free_tokens } => [&[2u8][..], &free_tokens.to_be_bytes()].concat(),
            Refusal::Rejected(reason) => [&[3u8][..], reason.as_bytes()].concat(),
            Refusal::Failed(reason) => [&[4u8][..], reason.as_bytes()].concat(),
        }
    }

    /// Decodes the refusal after its tag, `None` for an unknown tag.
    fn decode(tag: u8, rest: &[u8]) -> Result<Option<Self>> {
        let text = || String::from_utf8_lossy(rest).into_owned();
        Ok(Some(match tag {
            1 => Refusal::Unserved(text()),
            2 => Refusal::Full {
                free_tokens: u64::from_be_bytes(
                    rest.try_into()
                        .map_err(|_| malformed("refusal", "a full cache needs 8 bytes"))?,
                ),
            },
            3 => Refusal::Rejected(text()),
            4 => Refusal::Failed(text()),
            _ => return Ok(None),
        }))
    }
}

/// Encodes the server's answer to an opening.
pub fn encode_open_reply(outcome: std::result::Result<(), &Refusal>) -> Vec<u8> {
    match outcome {
        Ok(()) => vec![0],
        Err(refusal) => refusal.encode(),
    }
}

/// Decodes the server's answer to an opening: `Err` is a refusal.
pub fn decode_open_reply(bytes: &[u8]) -> Result<std::result::Result<(), Refusal>> {
    match bytes.split_first() {
        Some((0, [])) => Ok(Ok(())),
        Some((&tag, rest)) => match Refusal::decode(tag, rest)? {
            Some(refusal) => Ok(Err(refusal)),
            None => Err(malformed("session reply", "unknown tag")),
        },
        None => Err(malformed("session reply", "empty")),
    }
}

/// One step of a sequence through a span.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Positions already in the sequence before this step.
    pub position: u32,
    /// Number of token rows.
    pub n_tokens: u32,
    /// Where the output goes next (push), in route order; empty when the
    /// client relays.
    pub forward: Vec<Forward>,
    /// The hidden states, `n_tokens` rows.
    pub values: Vec<f32>,
}

/// One later hop of a pushed step: its server and its session's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The server.
    pub peer: PeerId,
    /// Its session's push token.
    pub token: PushToken,
}

impl Step {
    /// The frame for this step.
    pub fn encode(&self, dtype: Dtype) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.values.len() * dtype.size());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.n_tokens.to_be_bytes());
        let forward = &self.forward[..self.forward.len().min(MAX_FORWARD)];
        out.push(forward.len() as u8);
        for f in forward {
            let id = f.peer.to_bytes();
            out.push(id.len() as u8);
            out.extend_from_slice(&id);
            out.extend_from_slice(&f.token);
        }
        dtype.encode_into(&self.values, &mut out);
        out
    }

    /// Parses a step frame whose rows must be `width` wide.
    pub fn decode(bytes: &[u8], dtype: Dtype, width: usize) -> Result<Self> {
        let mut r = Reader {
            bytes,
            what: "step",
        };
        let position = r.u32()?;
        let n_tokens = r.u32()?;
        let count = usize::from(r.u8()?);
        if count > MAX_FORWARD {
            return Err(malformed("step", format!("{count} forwarding entries")));
        }
        let mut forward = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            let peer = PeerId::from_bytes(r.take(len)?)
                .map_err(|e| malformed("step", format!("forwarding peer id: {e}")))?;
            forward.push(Forward {
                peer,
                token: r.token()?,
            });
        }
        let values = dtype.decode(r.rest())?;
        let expected = (n_tokens as usize).checked_mul(width);
        if n_tokens == 0 || expected != Some(values.len()) {
            return Err(malformed(
                "step",
                format!(
                    "{} values do not form {n_tokens} rows of width {width}",
                    values.len()
                ),
            ));
        }
        Ok(Step {
            position,
            n_tokens,
            forward,
            values,
        })
    }
}

/// A receipt signature (Ed25519).
pub type ReceiptSignature = [u8; 64];

/// What a server answers a step it ran: its receipt signature, the hash
/// of the input rows it computed on, and the encoded output.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The receipt signature.
    pub signature: &'a ReceiptSignature,
    /// SHA-256 of the input rows as received.
    pub input: &'a [u8; 32],
    /// The output rows, encoded.
    pub output: &'a [u8],
}

/// Encodes a step's answer: the signed, encoded output, or a refusal.
pub fn encode_step_reply(outcome: std::result::Result<Signed<'_>, &Refusal>) -> Vec<u8> {
    match outcome {
        Ok(signed) => [&[0u8][..], signed.signature, signed.input, signed.output].concat(),
        Err(refusal) => refusal.encode(),
    }
}

/// The first byte of a server's answer to a step that was pushed to it
/// (then the output states), so a client that relays can tell a late
/// answer to a push from the answer to its own step.
pub const PUSHED_REPLY: u8 = 5;

/// Encodes the answer to a pushed step (sent to the session's client).
pub fn encode_pushed_reply(signed: Signed<'_>) -> Vec<u8> {
    [
        &[PUSHED_REPLY][..],
        signed.signature,
        signed.input,
        signed.output,
    ]
    .concat()
}

/// A server's answer to a step: its output and its receipt signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The output states, decoded.
    pub values: Vec<f32>,
    /// The output as sent (what the signature's digest covers).
    pub bytes: Vec<u8>,
    /// The server's receipt signature.
    pub signature: ReceiptSignature,
    /// SHA-256 of the input rows the server computed on.
    pub input: [u8; 32],
}

/// Decodes a step's answer: `Err` is the server's refusal or failure.
pub fn decode_step_reply(
    bytes: &[u8],
    dtype: Dtype,
) -> Result<std::result::Result<Answer, Refusal>> {
    match bytes.split_first() {
        Some((&(0 | PUSHED_REPLY), rest)) => {
            if rest.len() < 96 {
                return Err(malformed(
                    "step reply",
                    "no receipt signature and input hash",
                ));
            }
            let (signature, rest) = rest.split_at(64);
            let (input, output) = rest.split_at(32);
            Ok(Ok(Answer {
                values: dtype.decode(output)?,
                bytes: output.to_vec(),
                signature: signature.try_into().expect("split at 64"),
                input: input.try_into().expect("split at 32"),
            }))
        }
        Some((&tag, rest)) => match Refusal::decode(tag, rest)? {
            Some(refusal) => Ok(Err(refusal)),
            None => Err(malformed("step reply", "unknown tag")),
        },
        None => Err(malformed("step reply", "empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_reject_garbage() {
        let open = OpenRequest {
            model: "smollm2".into(),
            start: 10,
            end: 20,
            dtype: Dtype::F16,
            max_tokens: 512,
            token: [7; 16],
            prompts: None,
        };
        let bytes = open.encode();
        assert_eq!(OpenRequest::decode(&bytes).unwrap(), open);
        assert!(OpenRequest::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(OpenRequest::decode(&[bytes.clone(), vec![0]].concat()).is_err());
        let tuned = OpenRequest {
            prompts: Some(SessionPrompts {
                rows: 2,
                values: vec![0.5, -1.0, 2.0, 0.25],
            }),
            ..open.clone()
        };
        let bytes = tuned.encode();
        assert_eq!(OpenRequest::decode(&bytes).unwrap(), tuned);
        // Values cut mid-float, or rows announced with no values.
        assert!(OpenRequest::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(OpenRequest::decode(&bytes[..bytes.len() - 16]).is_err());

        let step = Step {
            position: 3,
            n_tokens: 2,
            forward: vec![Forward {
                peer: PeerId::random(),
                token: [9; 16],
            }],
            values: vec![1.0, -2.5, 3.25, 0.0],
        };
        let f32_bytes = step.encode(Dtype::F32);
        assert_eq!(Step::decode(&f32_bytes, Dtype::F32, 2).unwrap(), step);
        assert!(Step::decode(&f32_bytes, Dtype::F32, 3).is_err());
        // A forwarding list that claims more entries than the frame holds.
        let mut lying = f32_bytes.clone();
        lying[8] = 2;
        assert!(Step::decode(&lying, Dtype::F32, 2).is_err());
        lying[8] = MAX_FORWARD as u8 + 1;
        assert!(Step::decode(&lying, Dtype::F32, 2).is_err());
        // These values are exact in f16 too.
        assert_eq!(
            Step::decode(&step.encode(Dtype::F16), Dtype::F16, 2).unwrap(),
            step
        );

        assert_eq!(
            decode_open_reply(&encode_open_reply(Ok(()))).unwrap(),
            Ok(())
        );
        for refusal in [
            Refusal::Unserved("other span".into()),
            Refusal::Full { free_tokens: 4369 },
            Refusal::Rejected("challenge".into()),
            Refusal::Failed("thread died".into()),
        ] {
            assert_eq!(
                decode_open_reply(&encode_open_reply(Err(&refusal))).unwrap(),
                Err(refusal.clone())
            );
            assert_eq!(
                decode_step_reply(&encode_step_reply(Err(&refusal)), Dtype::F32).unwrap(),
                Err(refusal)
            );
        }
        assert!(decode_open_reply(&[7]).is_err());
        assert!(decode_open_reply(&[]).is_err());
        assert!(decode_open_reply(&[2, 1, 2]).is_err());
        let mut output = Vec::new();
        Dtype::F32.encode_into(&[1.5, 2.0], &mut output);
        let signed = |signature| Signed {
            signature,
            input: &[6; 32],
            output: &output,
        };
        let reply = encode_step_reply(Ok(signed(&[4; 64])));
        let answer = decode_step_reply(&reply, Dtype::F32).unwrap().unwrap();
        assert_eq!(
            (answer.values, answer.bytes, answer.signature, answer.input),
            (vec![1.5, 2.0], output.clone(), [4; 64], [6; 32])
        );
        let pushed = encode_pushed_reply(signed(&[5; 64]));
        assert_eq!(
            decode_step_reply(&pushed, Dtype::F32)
                .unwrap()
                .unwrap()
                .signature,
            [5; 64]
        );
        assert!(
            decode_step_reply(&[0; 90], Dtype::F32).is_err(),
            "no signature"
        );
        assert!(Dtype::F16.carries_finite(65504.0) && !Dtype::F16.carries_finite(65520.0));
        assert!(Dtype::F32.carries_finite(65520.0) && !Dtype::F32.carries_finite(f32::NAN));
    }
}
