//! Typed async client for the Hypertensor chain's JSON-RPC, and the wire
//! types the node and its clients share (SPEC §3.6).
//!
//! # Design
//!
//! * This crate is what subnet nodes, the CLI and tools link to talk to a
//!   chain node. It is kept apart from `hypertensor-chain` (the node) so its
//!   users do not build the node's storage (redb) or HTTP server (axum):
//!   it needs only tokio, tokio-tungstenite and serde_json.
//! * [`api`] defines the method names, parameters, result types and the
//!   stable error codes. The node implements exactly these; the [`Client`]
//!   calls exactly these.
//! * The [`Client`] speaks JSON-RPC 2.0 over one WebSocket: requests carry
//!   ids and are answered through `oneshot` channels, subscriptions
//!   (`chain_subscribeNewHeads`) through bounded channels. One background
//!   task owns the socket; the client handle is cheap to clone.
//! * Balances are `u128` and travel as JSON integers. serde_json's `Value`
//!   cannot hold integers above `u64::MAX`, so results are deserialized
//!   from the raw JSON text, never through `Value`.
//!
//! ```no_run
//! # async fn demo() -> hypertensor_chain_client::Result<()> {
//! use hypertensor_chain_client::Client;
//! use hypertensor_primitives::{Keypair, TENSOR};
//! use hypertensor_runtime::Call;
//!
//! let client = Client::connect("ws://127.0.0.1:9944").await?;
//! let alice = Keypair::dev("alice");
//! let bob = Keypair::dev("bob").account_id();
//! let inclusion = client
//!     .sign_and_watch(&alice, Call::Transfer { to: bob, amount: 5 * TENSOR })
//!     .await?;
//! println!("in block {} with {} events", inclusion.height, inclusion.events.len());
//! # Ok(()) }
//! ```

pub mod api;
mod client;
mod error;

pub use api::{
    AccountInfo, BlockId, BlockInfo, EvidenceInfo, HeaderInfo, Health, Inclusion, RpcError,
    SubmitResult,
};
pub use client::{Client, Subscription};
pub use error::{Error, Result};
