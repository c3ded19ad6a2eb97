//! One module per subcommand.

mod bench;
mod chain;
mod chat;
mod devnet;
mod generate;
mod keygen;
mod model;
mod node;
mod query;
mod swarm;
mod tx;

use anyhow::Result;

pub(crate) use chain::ChainArgs;
pub(crate) use devnet::DevnetArgs;
pub(crate) use keygen::KeygenArgs;
pub(crate) use node::NodeArgs;
pub(crate) use query::QueryArgs;
pub(crate) use swarm::SwarmArgs;
pub(crate) use tx::TxArgs;

use crate::cli::{Command, ModelCommand};

/// Runs a parsed command.
pub(crate) fn run(command: Command) -> Result<()> {
    match command {
        Command::Model(ModelCommand::Fetch { quiet }) => model::fetch(quiet),
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Chain(args) => chain::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Tx(args) => tx::run(args),
        Command::Query(args) => query::run(args),
        Command::Node(args) => node::run(args),
        Command::Devnet(args) => devnet::run(args),
    }
}
