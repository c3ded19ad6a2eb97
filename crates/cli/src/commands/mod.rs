//! One module per subcommand.

mod bench;
mod chat;
mod generate;
mod model;

use anyhow::Result;

use crate::cli::{Command, ModelCommand};

/// Runs a parsed command.
pub(crate) fn run(command: Command) -> Result<()> {
    match command {
        Command::Model(ModelCommand::Fetch { quiet }) => model::fetch(quiet),
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
