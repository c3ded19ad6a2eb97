//! Distributed inference (SPEC §5): block servers, routing, span sessions
//! with failover, and a [`LanguageModel`](hypertensor_model::LanguageModel)
//! over a chain of remote spans.
//!
//! # Bird's-eye view
//!
//! * A [`BlockServer`] holds one [`BlockSpan`](hypertensor_model::BlockSpan)
//!   and serves span sessions over the P2P layer's signed session streams
//!   ([`wire`] is the protocol: hidden states as little-endian f32 or f16).
//!   Each session reserves its KV cache in a memory budget at open; what
//!   does not fit is refused with a reason. Caches are freed on close or
//!   after an idle timeout. The server announces itself under
//!   `"<model>.<block>"` for each of its blocks ([`announce`]) and refreshes
//!   the announcement every third of its lifetime.
//! * A [`SwarmClient`] holds the embedding, head and tokenizer, reads the
//!   announcements, probes latencies, and routes by shortest path over
//!   latency plus announced throughput ([`routing`]). Each
//!   [`SwarmSession`] is one sequence: it keeps every step it sent to each
//!   hop, and when a server fails or refuses it bans that server (with a
//!   doubling backoff), re-routes the remaining blocks, replays the steps to
//!   rebuild the new servers' caches, and continues.
//! * [`SwarmBackend`] puts the swarm behind the OpenAI-compatible API by
//!   implementing `hypertensor-backend`'s `Backend` (this crate knows
//!   nothing of HTTP). A failure the session cannot recover from reaches
//!   the generation loop as `ModelError::Unavailable` carrying the
//!   [`InferenceError`], and the API as a 503.
//!
//! Design notes are in `docs/inference.md`.

pub mod announce;
mod backend;
mod bans;
mod client;
mod error;
pub mod metrics;
mod node;
pub mod routing;
mod server;
pub mod spot_check;
pub mod train;
pub mod tune;
pub mod wire;

pub use announce::{ServerInfo, ServerState, announce_schema, block_key};
pub use backend::SwarmBackend;
pub use client::{
    ClientConfig, ClientStats, DEFAULT_CHECK_RATE, SwarmClient, SwarmSession, announced_servers,
};
pub use error::{InferenceError, Result};
pub use node::{AdmitAll, EvidenceInbox, p2p_config, take_evidence};
pub use server::{BlockServer, Corruption, ServerConfig, ServingFault};

/// The chain's form of a libp2p peer id (the same multihash bytes), as
/// receipts and evidence name servers and clients.
pub(crate) fn peer_id(peer: &hypertensor_p2p::PeerId) -> hypertensor_primitives::PeerId {
    hypertensor_primitives::PeerId::from_bytes(&peer.to_bytes()).unwrap_or_else(|_| {
        // Unreachable: libp2p ids are identity or SHA-256 multihashes,
        // both of which the chain's form accepts.
        hypertensor_primitives::PeerId::from_ed25519(&hypertensor_primitives::AccountId([0; 32]))
    })
}
