//! End-to-end tests of the `hypertensor` binary, run as a user runs it.

mod chain;
mod devnet;
mod finetune;
mod http;
mod key_files;
mod local_model;
mod model_names;
mod netns;
mod node;
mod process;
#[path = "../../../api/tests/api/python_env.rs"]
mod python_env;
mod replicated;
mod serve;
mod staked_lab;
mod supervision;
mod tuned;
