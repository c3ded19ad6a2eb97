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
mod node;
pub mod routing;
mod server;
pub mod wire;

pub use announce::{ServerInfo, ServerState, announce_schema, block_key};
pub use backend::SwarmBackend;
pub use client::{ClientConfig, ClientStats, SwarmClient, SwarmSession, announced_servers};
pub use error::{InferenceError, Result};
pub use node::{AdmitAll, p2p_config};
pub use server::{BlockServer, ServerConfig};
