//! The peer-to-peer layer of a Hypertensor subnet (SPEC §4).
//!
//! # Bird's eye view
//!
//! * [`new`] builds a rust-libp2p swarm (TCP + Noise + Yamux, identify,
//!   ping, Kademlia on `/hypertensor/<subnet>/kad/1.0.0`, and two stream
//!   protocols for RPC) and returns a cloneable [`Client`], a bounded
//!   stream of [`Event`]s and the [`EventLoop`] that owns the swarm.
//! * **Records** ([`record`]) are dictionaries `key -> {subkey -> (value,
//!   expiration)}` whose entries are signed by their writer (subkey = the
//!   writer's peer id) and merged per subkey by the strictly later
//!   expiration. [`Client::store`], [`Client::get`], re-publication by the
//!   owner until expiry.
//! * **Validators** ([`validate`]) run on every inbound write in SPEC §4's
//!   order: signature and ownership, schema ([`schema`]), max TTL, phase
//!   window ([`PhaseClock`]), per-writer per-epoch limit, proof of stake
//!   ([`StakeOracle`], cached by [`CachingStakeOracle`] over a
//!   [`StakeLookup`]). Rejections are counted in [`Metrics`].
//! * **Signed RPC** ([`rpc`]): unary calls ([`Client::request`],
//!   [`RpcHandler`]) and long-lived sessions ([`Client::open_session`],
//!   [`Event::InboundSession`]) with SPEC §4's envelope on requests and
//!   signed responses bound to the request nonce.
//!
//! The crate knows nothing of models or consensus: key schemas, the phase
//! clock, the stake lookup and the RPC handler are plugged in through
//! [`Config`]. Design decisions are written down in `docs/p2p.md`.

mod codec;
mod config;
mod error;
mod network;
pub mod record;
pub mod rpc;
pub mod schema;
mod server;
pub mod validate;

pub use config::{Config, libp2p_identity, load_identity};
pub use error::{P2pError, Result};
pub use network::{Client, Event, EventLoop, new};
pub use record::{Dictionary, SignedEntry, now_ms};
pub use rpc::{Admission, Outcome, Refusal, RpcHandler, RpcSession, SignedRequest, SignedResponse};
pub use schema::{KeySchema, SchemaRegistry};
pub use validate::{
    CachingStakeOracle, Metrics, PhaseClock, RejectKind, RejectReason, StakeLookup, StakeOracle,
    StakeSet, WallClockEpochs,
};

/// Re-exported libp2p types that appear in this crate's API.
pub use libp2p::{Multiaddr, PeerId};
