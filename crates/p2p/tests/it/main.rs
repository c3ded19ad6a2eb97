//! Integration tests of the P2P layer on real swarms over loopback.

mod chain;
mod dht;
mod harness;
mod rpc;
