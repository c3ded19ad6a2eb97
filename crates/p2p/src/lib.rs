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
//! # Example
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use hypertensor_p2p::{
//!     CachingStakeOracle, Config, KeySchema, SchemaRegistry, StakeSet, WallClockEpochs, now_ms,
//! };
//! use hypertensor_primitives::{H256, Keypair};
//!
//! # async fn run() -> hypertensor_p2p::Result<()> {
//! let keypair = hypertensor_p2p::load_identity("node.key".as_ref())?;
//! let schemas = SchemaRegistry::new()
//!     .register(KeySchema::bytes("model.", 1024, Duration::from_secs(600)));
//! let mut config = Config::new(
//!     keypair,
//!     1,                // subnet id
//!     H256::ZERO,       // genesis hash of the network
//!     schemas,
//!     Arc::new(WallClockEpochs { epoch_length: Duration::from_secs(600) }),
//!     Arc::new(CachingStakeOracle::new(StakeSet::default())), // the chain lookup in a node
//! );
//! config.listen = vec!["/ip4/0.0.0.0/tcp/4001".parse().expect("valid address")];
//! let (client, _events, event_loop) = hypertensor_p2p::new(config)?;
//! tokio::spawn(event_loop.run());
//! client.store("model.0", b"online".to_vec(), now_ms() + 300_000).await?;
//! let servers = client.get("model.0").await?;
//! for entry in servers.entries() {
//!     println!("{} -> {:?}", entry.subkey, entry.value);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The crate knows nothing of models or consensus: key schemas, the phase
//! clock, the stake lookup and the RPC handler are plugged in through
//! [`Config`]. Design decisions are written down in `docs/p2p.md`.

mod codec;
mod config;
mod error;
mod metrics;
pub mod nat;
mod network;
pub mod record;
pub mod rpc;
pub mod schema;
mod server;
pub mod validate;

pub use config::{Config, libp2p_identity, load_identity};
pub use error::{P2pError, Result};
pub use nat::Reachability;
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
