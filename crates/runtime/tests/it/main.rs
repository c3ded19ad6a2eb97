//! Integration tests of hypertensor-runtime (one test binary).

mod blocks;
mod calls;
mod common;
mod eda;
mod fuzz;
mod lifecycle;
mod settlement;
mod subsidy;
