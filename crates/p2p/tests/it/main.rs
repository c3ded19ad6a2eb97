//! Integration tests of the P2P layer on real swarms over loopback.

mod dht;
mod harness;
mod rpc;
