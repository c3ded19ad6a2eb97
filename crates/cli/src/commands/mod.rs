//! One module per subcommand.

mod bench;
mod chain;
mod chat;
mod devnet;
mod finetune;
mod generate;
mod keygen;
mod model;
mod node;
mod query;
mod serve;
mod signal;
mod swarm;
mod tx;

use anyhow::{Context, Result};

pub(crate) use chain::ChainArgs;
pub(crate) use devnet::DevnetArgs;
pub(crate) use finetune::FinetuneArgs;
pub(crate) use keygen::KeygenArgs;
pub(crate) use node::NodeArgs;
pub(crate) use query::QueryArgs;
pub(crate) use serve::ServeArgs;
pub(crate) use swarm::SwarmArgs;
pub(crate) use tx::TxArgs;

use crate::cli::{Command, ModelCommand};

/// Runs a parsed command on the process's one tokio runtime, built here:
/// async commands run on it with `block_on`; the synchronous generation
/// commands get its handle, which the swarm client blocks on from this
/// (non-runtime) thread.
pub(crate) fn run(command: Command) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let handle = runtime.handle();
    let outcome = match command {
        Command::Model(ModelCommand::Fetch { name, quiet }) => model::fetch(name.as_deref(), quiet),
        Command::Model(ModelCommand::List) => model::list(),
        Command::Generate(args) => generate::run(args, handle),
        Command::Chat(args) => chat::run(args, handle),
        Command::Bench(args) => bench::run(args),
        Command::Chain(args) => runtime.block_on(chain::run(args)),
        Command::Keygen(args) => keygen::run(args),
        Command::Tx(args) => runtime.block_on(tx::run(args)),
        Command::Query(args) => runtime.block_on(query::run(args)),
        Command::Node(args) => runtime.block_on(node::run(args)),
        Command::Devnet(args) => runtime.block_on(devnet::run(args)),
        Command::Serve(args) => runtime.block_on(serve::run(args)),
        Command::Finetune(args) => finetune::run(args, handle),
    };
    // Whatever still runs (a blocking read, a task that ignored its abort)
    // must not hold the process past its answer.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    outcome
}

/// Longest the runtime's leftover tasks may delay the process's exit.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_millis(500);
