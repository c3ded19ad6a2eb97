//! Integration tests of the chain node, in process, over its real RPC
//! (HTTP and WebSocket) on ephemeral ports. Process-level tests (kill -9,
//! the CLI) live in the `hypertensor-cli` crate's tests.

mod bad_input;
mod common;
mod limits;
mod observe;
mod service;
