//! Devnets in-process over real sockets and the real chain RPC: an
//! honest subnet over several epochs, adversaries, a silent elected
//! validator and a peer without stake.

mod adversaries;
mod browser;
mod chain_validators;
mod dashboard;
mod honest;
mod phases;
mod restart;
mod scenario;
mod silent;
mod spans;
mod unstaked;
mod verified;
