//! Seeded simulations of a subnet whose nodes run the duty state machine:
//! every scenario over hundreds of seeds, each with its own schedule of
//! delays, reorders and losses. A failure names its seed; rerun it alone
//! with `SIM_SEED=<seed>`, or run more with `SIM_SEEDS=<n>`.

mod harness;
mod scenarios;
