//! The consensus duties of one subnet node (SPEC §6) as a pure state
//! machine: no I/O, no clock, no async runtime, no randomness but the seed
//! it is given.
//!
//! ```text
//!   chain heads, read answers,      ┌──────────┐    reads, writes, submissions,
//!   write and submit outcomes  ───> │  Duties  │ ─> sketches, notices
//!        (Input)                    └──────────┘        (Action)
//! ```
//!
//! [`Duties`] is fed [`Input`]s (a new head, the answer to a read, the
//! outcome of a write, a submission or a sketch) and returns the
//! [`Action`]s to take. Whoever runs it executes those actions: the node
//! over the real chain RPC and DHT (`hypertensor-node`), or a seeded
//! simulation over an in-memory DHT and the real runtime (this crate's
//! tests). Every duty is retried at the next head while its window is
//! open; nothing here ever waits or fails hard.
//!
//! * [`view`]: from what a node reads to the inputs of the scoring
//!   functions, in a fixed order.
//! * [`io`]: the inputs, actions and notices.
//! * `byzantine` (feature `test-utils`): faulty nodes as wrappers over the
//!   action stream, for tests.

mod config;
pub mod io;
mod retry;
mod state;
pub mod view;

#[cfg(feature = "test-utils")]
pub mod byzantine;

pub use config::{DutyConfig, RESUBMIT_AFTER_BLOCKS};
pub use io::{
    Action, Answer, Duty, DutyMachine, EpochChain, Input, Notice, Query, Sketches, SubmitError,
};
pub use state::Duties;
pub use view::{EpochScores, EpochView, score_epoch};
