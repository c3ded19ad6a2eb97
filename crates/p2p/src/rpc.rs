//! Signed RPC (SPEC §4): envelopes, their checks, framing and sessions.
//!
//! A request carries sender, recipient, timestamp, a 16-byte nonce, the
//! method, the body and the sender's signature over all of these with the
//! body replaced by its SHA-256 (domain `rpc-request`). The server refuses it
//! unless the recipient is itself, the sender is the peer the Noise
//! handshake authenticated, the clock skew is at most 60 s, the signature
//! verifies, and the nonce was not seen in the last 180 s. Every answer -
//! result, handler error or refusal - is signed by the server over its peer
//! id, the client, the request nonce and the SHA-256 of the outcome (domain
//! `rpc-response`), so a signed response is evidence of what a server said
//! to which request.
//!
//! Wire: each message is one frame (`u32` big-endian length, then bytes).
//! A unary call opens a substream, sends the request frame, reads the
//! response frame and closes. A session (long-lived, bidirectional) sends a
//! request frame whose method names the session, gets a signed response
//! (accepted or refused), and then both sides exchange frames on the same
//! Noise-authenticated substream until either closes it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{AsyncReadExt, AsyncWriteExt};
use hypertensor_primitives::{H256, Keypair, Signature, sha256};
use libp2p::{PeerId, Stream};

use crate::codec::{Reader, Writer};
use crate::record::peer_id_of;
use crate::{P2pError, Result};

/// Signing purpose of requests.
pub const REQUEST_PURPOSE: &str = "rpc-request";
/// Signing purpose of responses.
pub const RESPONSE_PURPOSE: &str = "rpc-response";
/// Largest clock difference accepted, in ms.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// How long a nonce stays remembered, in ms.
pub const NONCE_TTL_MS: u64 = 180_000;
/// Longest method name.
pub const MAX_METHOD_LEN: usize = 128;

/// Why a server refused a request. Sent back (signed) to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request names another peer as its recipient.
    WrongRecipient,
    /// The signed sender is not the peer the transport authenticated.
    SenderMismatch,
    /// The timestamp is too far from the server's clock.
    ClockSkew {
        /// The difference, in ms.
        skew_ms: u64,
    },
    /// This nonce was already used in the last 180 s.
    ReplayedNonce,
    /// The signature does not verify under the sender's key.
    BadSignature,
    /// The caller is not a staked node of this subnet.
    NotStaked,
    /// The caller exceeded its request rate (public-client mode).
    RateLimited,
    /// The request did not decode.
    Malformed(String),
    /// No session handler accepts this method.
    UnknownMethod(String),
    /// The server is at its limit of concurrent work.
    Overloaded,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::WrongRecipient => f.write_str("request is addressed to another peer"),
            Refusal::SenderMismatch => {
                f.write_str("signed sender differs from the authenticated peer")
            }
            Refusal::ClockSkew { skew_ms } => {
                write!(
                    f,
                    "timestamp is {skew_ms} ms off (max {MAX_CLOCK_SKEW_MS} ms)"
                )
            }
            Refusal::ReplayedNonce => f.write_str("nonce already used (replay)"),
            Refusal::BadSignature => f.write_str("request signature does not verify"),
            Refusal::NotStaked => f.write_str("caller is not a staked node of this subnet"),
            Refusal::RateLimited => f.write_str("caller exceeded its request rate"),
            Refusal::Malformed(why) => write!(f, "malformed request: {why}"),
            Refusal::UnknownMethod(m) => write!(f, "unknown method {m:?}"),
            Refusal::Overloaded => f.write_str("server overloaded"),
        }
    }
}

impl Refusal {
    fn encode(&self, w: &mut Writer) {
        let (code, text): (u8, String) = match self {
            Refusal::WrongRecipient => (1, String::new()),
            Refusal::SenderMismatch => (2, String::new()),
            Refusal::ClockSkew { skew_ms } => (3, skew_ms.to_string()),
            Refusal::ReplayedNonce => (4, String::new()),
            Refusal::BadSignature => (5, String::new()),
            Refusal::NotStaked => (6, String::new()),
            Refusal::RateLimited => (7, String::new()),
            Refusal::Malformed(s) => (8, s.clone()),
            Refusal::UnknownMethod(s) => (9, s.clone()),
            Refusal::Overloaded => (10, String::new()),
        };
        w.u8(code).bytes(text.as_bytes());
    }

    fn decode(r: &mut Reader<'_>) -> Result<Refusal> {
        let code = r.u8()?;
        let text = String::from_utf8_lossy(r.bytes(4096)?).into_owned();
        Ok(match code {
            1 => Refusal::WrongRecipient,
            2 => Refusal::SenderMismatch,
            3 => Refusal::ClockSkew {
                skew_ms: text.parse().unwrap_or(0),
            },
            4 => Refusal::ReplayedNonce,
            5 => Refusal::BadSignature,
            6 => Refusal::NotStaked,
            7 => Refusal::RateLimited,
            8 => Refusal::Malformed(text),
            9 => Refusal::UnknownMethod(text),
            10 => Refusal::Overloaded,
            other => {
                return Err(P2pError::Malformed {
                    what: "rpc refusal",
                    reason: format!("unknown code {other}"),
                });
            }
        })
    }
}

/// A signed request envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// The caller.
    pub sender: PeerId,
    /// The server it is meant for.
    pub recipient: PeerId,
    /// The caller's clock, Unix ms.
    pub timestamp_ms: u64,
    /// 16 random bytes, never reused.
    pub nonce: [u8; 16],
    /// The method (or session kind) called.
    pub method: String,
    /// The body.
    pub body: Vec<u8>,
    /// The sender's signature (see the module docs).
    pub signature: [u8; 64],
}

impl SignedRequest {
    /// Builds and signs a request with a fresh random nonce and the current
    /// time.
    pub fn new(
        keypair: &Keypair,
        genesis: &H256,
        recipient: PeerId,
        method: &str,
        body: Vec<u8>,
    ) -> SignedRequest {
        Self::with(
            keypair,
            genesis,
            recipient,
            method,
            body,
            crate::record::now_ms(),
            rand::random(),
        )
    }

    /// Builds and signs a request with a given timestamp and nonce.
    pub fn with(
        keypair: &Keypair,
        genesis: &H256,
        recipient: PeerId,
        method: &str,
        body: Vec<u8>,
        timestamp_ms: u64,
        nonce: [u8; 16],
    ) -> SignedRequest {
        let mut req = SignedRequest {
            sender: peer_id_of(keypair),
            recipient,
            timestamp_ms,
            nonce,
            method: method.to_string(),
            body,
            signature: [0; 64],
        };
        req.signature = keypair
            .sign_domain(REQUEST_PURPOSE, genesis, &req.signed_payload())
            .0;
        req
    }

    /// The bytes the signature covers (before domain separation).
    pub fn signed_payload(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&self.sender.to_bytes())
            .bytes(&self.recipient.to_bytes())
            .u64(self.timestamp_ms)
            .raw(&self.nonce)
            .bytes(self.method.as_bytes())
            .raw(&sha256(&[&self.body]).0);
        w.0
    }

    /// Verifies the signature under the sender's key.
    pub fn verify_signature(&self, genesis: &H256) -> bool {
        verify_peer_signature(
            &self.sender,
            REQUEST_PURPOSE,
            genesis,
            &self.signed_payload(),
            &self.signature,
        )
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&self.sender.to_bytes())
            .bytes(&self.recipient.to_bytes())
            .u64(self.timestamp_ms)
            .raw(&self.nonce)
            .bytes(self.method.as_bytes())
            .bytes(&self.body)
            .raw(&self.signature);
        w.0
    }

    /// Decodes the wire encoding (bodies up to `max_body` bytes).
    pub fn decode(bytes: &[u8], max_body: usize) -> Result<SignedRequest> {
        let mut r = Reader::new(bytes, "rpc request");
        let sender = r.peer_id()?;
        let recipient = r.peer_id()?;
        let timestamp_ms = r.u64()?;
        let nonce = r.array()?;
        let method = String::from_utf8(r.bytes(MAX_METHOD_LEN)?.to_vec()).map_err(|_| {
            P2pError::Malformed {
                what: "rpc request",
                reason: "method is not UTF-8".into(),
            }
        })?;
        let body = r.bytes(max_body)?.to_vec();
        let signature = r.array()?;
        r.finish()?;
        Ok(SignedRequest {
            sender,
            recipient,
            timestamp_ms,
            nonce,
            method,
            body,
            signature,
        })
    }
}

fn verify_peer_signature(
    peer: &PeerId,
    purpose: &str,
    genesis: &H256,
    payload: &[u8],
    signature: &[u8; 64],
) -> bool {
    hypertensor_primitives::PeerId::from_bytes(&peer.to_bytes())
        .ok()
        .and_then(|p| p.ed25519_public_key())
        .is_some_and(|key| {
            key.verify_domain(purpose, genesis, payload, &Signature(*signature))
                .is_ok()
        })
}

/// What a server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handler's result (or, for a session, acceptance).
    Ok(Vec<u8>),
    /// The request was refused before reaching the handler.
    Refused(Refusal),
    /// The handler failed with a message.
    Error(String),
}

/// A server's signed answer, bound to the request's nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedResponse {
    /// The server that answered.
    pub server: PeerId,
    /// The caller it answered.
    pub client: PeerId,
    /// The nonce of the request answered.
    pub request_nonce: [u8; 16],
    /// The answer.
    pub outcome: Outcome,
    /// The server's signature (see the module docs).
    pub signature: [u8; 64],
}

impl SignedResponse {
    /// Signs an answer to a request from `client` with `request_nonce`.
    pub fn sign(
        keypair: &Keypair,
        genesis: &H256,
        client: PeerId,
        request_nonce: [u8; 16],
        outcome: Outcome,
    ) -> SignedResponse {
        let mut resp = SignedResponse {
            server: peer_id_of(keypair),
            client,
            request_nonce,
            outcome,
            signature: [0; 64],
        };
        resp.signature = keypair
            .sign_domain(RESPONSE_PURPOSE, genesis, &resp.signed_payload())
            .0;
        resp
    }

    fn outcome_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match &self.outcome {
            Outcome::Ok(body) => w.u8(0).bytes(body),
            Outcome::Refused(r) => {
                w.u8(1);
                r.encode(&mut w);
                &mut w
            }
            Outcome::Error(m) => w.u8(2).bytes(m.as_bytes()),
        };
        w.0
    }

    /// The bytes the signature covers (before domain separation).
    pub fn signed_payload(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&self.server.to_bytes())
            .bytes(&self.client.to_bytes())
            .raw(&self.request_nonce)
            .raw(&sha256(&[&self.outcome_bytes()]).0);
        w.0
    }

    /// Checks that `server` signed this response to the request with
    /// `request`'s nonce. (The `client` field names the peer the server
    /// answered, as authenticated by the transport; callers compare it with
    /// themselves.)
    pub fn verify(&self, genesis: &H256, server: &PeerId, request: &SignedRequest) -> bool {
        self.server == *server
            && self.request_nonce == request.nonce
            && verify_peer_signature(
                server,
                RESPONSE_PURPOSE,
                genesis,
                &self.signed_payload(),
                &self.signature,
            )
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&self.server.to_bytes())
            .bytes(&self.client.to_bytes())
            .raw(&self.request_nonce)
            .raw(&self.outcome_bytes())
            .raw(&self.signature);
        w.0
    }

    /// Decodes the wire encoding (bodies up to `max_body` bytes).
    pub fn decode(bytes: &[u8], max_body: usize) -> Result<SignedResponse> {
        let mut r = Reader::new(bytes, "rpc response");
        let server = r.peer_id()?;
        let client = r.peer_id()?;
        let request_nonce = r.array()?;
        let outcome = match r.u8()? {
            0 => Outcome::Ok(r.bytes(max_body)?.to_vec()),
            1 => Outcome::Refused(Refusal::decode(&mut r)?),
            2 => Outcome::Error(String::from_utf8_lossy(r.bytes(64 * 1024)?).into_owned()),
            other => {
                return Err(P2pError::Malformed {
                    what: "rpc response",
                    reason: format!("unknown outcome {other}"),
                });
            }
        };
        let signature = r.array()?;
        r.finish()?;
        Ok(SignedResponse {
            server,
            client,
            request_nonce,
            outcome,
            signature,
        })
    }
}

/// Writes one frame.
pub(crate) async fn write_frame(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Reads one frame of at most `max` bytes; `None` at a clean end of stream.
pub(crate) async fn read_frame(
    stream: &mut Stream,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = stream.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Remembers nonces for [`NONCE_TTL_MS`].
#[derive(Default)]
struct ReplayGuard {
    seen: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

impl ReplayGuard {
    /// Records the nonce; false if it was already seen and not yet expired.
    fn first_use(&mut self, nonce: [u8; 16], now_ms: u64) -> bool {
        while let Some((n, until)) = self.order.front().copied() {
            if until > now_ms {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&n) == Some(&until) {
                self.seen.remove(&n);
            }
        }
        if self.seen.contains_key(&nonce) {
            return false;
        }
        let until = now_ms + NONCE_TTL_MS;
        self.seen.insert(nonce, until);
        self.order.push_back((nonce, until));
        true
    }
}

/// Per-peer request counting in one-second windows.
struct RateLimiter {
    per_second: u32,
    windows: HashMap<PeerId, (Instant, u32)>,
}

impl RateLimiter {
    fn admit(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.windows.len() > 65_536 {
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let (start, count) = self.windows.entry(peer).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_second {
            return false;
        }
        *count += 1;
        true
    }
}

/// Who may call this server.
#[derive(Clone, Debug)]
pub enum Admission {
    /// Only peers that pass proof of stake.
    StakedOnly,
    /// Anyone, each peer limited to this many requests per second (staked
    /// peers are not limited).
    PublicClients {
        /// Requests per second per unstaked peer.
        per_second: u32,
    },
}

/// The server side's envelope checks and their state.
pub(crate) struct RequestGuard {
    pub(crate) local: PeerId,
    pub(crate) genesis: H256,
    replay: Mutex<ReplayGuard>,
    rate: Mutex<RateLimiter>,
    pub(crate) admission: Admission,
}

impl RequestGuard {
    pub(crate) fn new(local: PeerId, genesis: H256, admission: Admission) -> Self {
        let per_second = match admission {
            Admission::PublicClients { per_second } => per_second,
            Admission::StakedOnly => 0,
        };
        RequestGuard {
            local,
            genesis,
            replay: Mutex::new(ReplayGuard::default()),
            rate: Mutex::new(RateLimiter {
                per_second,
                windows: HashMap::new(),
            }),
            admission,
        }
    }

    /// The envelope checks, in order: recipient, sender, clock, signature,
    /// nonce. The nonce is only remembered once the signature verifies, so
    /// forgeries cannot burn other callers' nonces.
    pub(crate) fn check(
        &self,
        transport_peer: &PeerId,
        req: &SignedRequest,
        now_ms: u64,
    ) -> std::result::Result<(), Refusal> {
        if req.recipient != self.local {
            return Err(Refusal::WrongRecipient);
        }
        if req.sender != *transport_peer {
            return Err(Refusal::SenderMismatch);
        }
        let skew_ms = now_ms.abs_diff(req.timestamp_ms);
        if skew_ms > MAX_CLOCK_SKEW_MS {
            return Err(Refusal::ClockSkew { skew_ms });
        }
        if !req.verify_signature(&self.genesis) {
            return Err(Refusal::BadSignature);
        }
        let mut replay = self.replay.lock().unwrap_or_else(|p| p.into_inner());
        if !replay.first_use(req.nonce, now_ms) {
            return Err(Refusal::ReplayedNonce);
        }
        Ok(())
    }

    /// Admission by stake, or by rate for unstaked public clients.
    pub(crate) fn admit(&self, peer: PeerId, staked: bool) -> std::result::Result<(), Refusal> {
        match (&self.admission, staked) {
            (_, true) => Ok(()),
            (Admission::StakedOnly, false) => Err(Refusal::NotStaked),
            (Admission::PublicClients { .. }, false) => {
                let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
                if rate.admit(peer, Instant::now()) {
                    Ok(())
                } else {
                    Err(Refusal::RateLimited)
                }
            }
        }
    }
}

/// Serves unary requests; registered in the [`crate::Config`].
///
/// The returned future is polled by the node's event loop (bounded by
/// `max_inbound_work`), so it must not block: CPU-heavy work belongs on
/// another thread (e.g. `tokio::task::spawn_blocking`), awaited here.
pub trait RpcHandler: Send + Sync + 'static {
    /// Answers `method` with `body` from the (authenticated, admitted)
    /// `caller`; an `Err` is sent back as a signed handler error.
    fn handle(
        &self,
        caller: PeerId,
        method: String,
        body: Vec<u8>,
    ) -> BoxFuture<'static, std::result::Result<Vec<u8>, String>>;
}

/// A long-lived, bidirectional, framed session with one peer.
pub struct RpcSession {
    peer: PeerId,
    nonce: [u8; 16],
    stream: Stream,
    max_frame: usize,
}

impl RpcSession {
    pub(crate) fn new(peer: PeerId, nonce: [u8; 16], stream: Stream, max_frame: usize) -> Self {
        RpcSession {
            peer,
            nonce,
            stream,
            max_frame,
        }
    }

    /// The peer at the other end (authenticated by the transport).
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The nonce of the signed request that opened the session: what the
    /// server's answers in it can be bound to.
    pub fn nonce(&self) -> [u8; 16] {
        self.nonce
    }

    /// Sends one frame. Not cancel-safe: a dropped send may leave half a
    /// frame on the stream; close the session after cancelling.
    pub async fn send(&mut self, frame: &[u8]) -> Result<()> {
        if frame.len() > self.max_frame {
            return Err(P2pError::Network(format!(
                "frame of {} bytes exceeds the limit of {}",
                frame.len(),
                self.max_frame
            )));
        }
        Ok(write_frame(&mut self.stream, frame).await?)
    }

    /// Receives the next frame; `None` when the peer closed the session.
    /// Not cancel-safe (a partly read frame is lost).
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(read_frame(&mut self.stream, self.max_frame).await?)
    }

    /// Closes our side of the session.
    pub async fn close(mut self) -> Result<()> {
        Ok(self.stream.close().await?)
    }
}

impl fmt::Debug for RpcSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcSession")
            .field("peer", &self.peer)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_bind_the_request() {
        let alice = Keypair::dev("alice");
        let bob = Keypair::dev("bob");
        let g = H256::ZERO;
        let req = SignedRequest::new(&alice, &g, peer_id_of(&bob), "m", b"body".to_vec());
        assert_eq!(SignedRequest::decode(&req.encode(), 10).unwrap(), req);
        assert!(req.verify_signature(&g));
        let mut tampered = req.clone();
        tampered.body = b"bodY".to_vec();
        assert!(!tampered.verify_signature(&g));

        for outcome in [
            Outcome::Ok(b"r".to_vec()),
            Outcome::Refused(Refusal::ClockSkew { skew_ms: 61_000 }),
            Outcome::Error("boom".into()),
        ] {
            let resp = SignedResponse::sign(&bob, &g, req.sender, req.nonce, outcome);
            let back = SignedResponse::decode(&resp.encode(), 10).unwrap();
            assert_eq!(back, resp);
            assert!(back.verify(&g, &peer_id_of(&bob), &req));
            assert!(!back.verify(&g, &peer_id_of(&alice), &req), "wrong server");
            let other = SignedRequest::new(&alice, &g, peer_id_of(&bob), "m", vec![]);
            assert!(!back.verify(&g, &peer_id_of(&bob), &other), "other nonce");
        }
    }

    #[test]
    fn guard_checks_in_order() {
        let alice = Keypair::dev("alice");
        let bob = Keypair::dev("bob");
        let g = H256::ZERO;
        let (a, b) = (peer_id_of(&alice), peer_id_of(&bob));
        let guard = RequestGuard::new(b, g, Admission::StakedOnly);
        let now = 10_000_000;
        let req = SignedRequest::with(&alice, &g, b, "m", vec![], now, [1; 16]);
        assert_eq!(guard.check(&a, &req, now), Ok(()));
        assert_eq!(guard.check(&a, &req, now), Err(Refusal::ReplayedNonce));
        // The nonce is forgotten after 180 s.
        let later = now + NONCE_TTL_MS + 1;
        let again = SignedRequest::with(&alice, &g, b, "m", vec![], later, [1; 16]);
        assert_eq!(guard.check(&a, &again, later), Ok(()));
        let to_alice = SignedRequest::with(&alice, &g, a, "m", vec![], now, [2; 16]);
        assert_eq!(
            guard.check(&a, &to_alice, now),
            Err(Refusal::WrongRecipient)
        );
        let fresh = SignedRequest::with(&alice, &g, b, "m", vec![], now, [3; 16]);
        assert_eq!(guard.check(&b, &fresh, now), Err(Refusal::SenderMismatch));
        assert_eq!(
            guard.check(&a, &fresh, now + 60_001),
            Err(Refusal::ClockSkew { skew_ms: 60_001 })
        );
        let mut forged = fresh.clone();
        forged.signature[0] ^= 1;
        assert_eq!(guard.check(&a, &forged, now), Err(Refusal::BadSignature));
        assert_eq!(
            guard.check(&a, &fresh, now),
            Ok(()),
            "a forgery must not burn the nonce"
        );
        assert_eq!(guard.admit(a, false), Err(Refusal::NotStaked));
        let public = RequestGuard::new(b, g, Admission::PublicClients { per_second: 2 });
        assert_eq!(public.admit(a, false), Ok(()));
        assert_eq!(public.admit(a, false), Ok(()));
        assert_eq!(public.admit(a, false), Err(Refusal::RateLimited));
        assert_eq!(
            public.admit(a, true),
            Ok(()),
            "staked peers are not limited"
        );
    }
}
