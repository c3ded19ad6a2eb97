//! Integration tests of hypertensor-primitives (one test binary).

mod libp2p_compat;
