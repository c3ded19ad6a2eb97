//! `generate --swarm …` and `chat --swarm …`: the same commands, with the
//! transformer blocks run by the swarm's hosters instead of locally. This
//! process holds only the embedding, the head and the tokenizer.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use hypertensor_inference::SwarmClient;
use hypertensor_model::{ChatTemplate, LanguageModel, LocalModel, PromptTuning, Tokenizer};
use hypertensor_node::{NodeBuilder, NodeOptions, RunningNode};
use hypertensor_p2p::Multiaddr;
use hypertensor_primitives::Keypair;
use tokio::runtime::Handle;

/// Where the blocks run.
#[derive(Debug, Args)]
pub(crate) struct SwarmArgs {
    /// Run the blocks on the swarm reached through this peer (a multiaddr
    /// ending in /p2p/<peer id>; repeatable) instead of locally.
    #[arg(long = "swarm", value_name = "MULTIADDR")]
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// The subnet whose DHT to join (with --swarm).
    #[arg(long, default_value_t = 1, requires = "bootstrap")]
    pub(crate) subnet_id: u32,
    /// The model's name in DHT keys (with --swarm; default as for `node`).
    #[arg(long, value_name = "NAME", requires = "bootstrap")]
    pub(crate) model_name: Option<String>,
    /// Relay every hidden state through this process instead of having
    /// each server push its output straight to the next (with --swarm).
    #[arg(long, requires = "bootstrap")]
    pub(crate) relay: bool,
}

/// A model to generate with: all local, or ends local and blocks remote.
pub(crate) enum Engine {
    /// Every part in this process.
    Local(Box<LocalModel>),
    /// Embedding and head here, blocks on the swarm.
    Swarm(Box<SwarmEngine>),
}

/// A swarm client and the node (built like every other, by
/// [`NodeBuilder`]) whose P2P layer it runs over.
pub(crate) struct SwarmEngine {
    client: Arc<SwarmClient>,
    name: String,
    // Held: dropping it stops the node's tasks.
    _node: RunningNode,
}

impl Engine {
    /// The local model at `path`, or a client of the swarm for it whose
    /// node runs on `runtime` (the swarm session blocks on it from this
    /// thread).
    pub(crate) fn open(path: &Path, swarm: &SwarmArgs, runtime: &Handle) -> Result<Engine> {
        if swarm.bootstrap.is_empty() {
            let model = LocalModel::load(path)
                .with_context(|| format!("loading model {}", path.display()))?;
            return Ok(Engine::Local(Box::new(model)));
        }
        Ok(Engine::Swarm(Box::new(SwarmEngine::join(
            path, swarm, runtime,
        )?)))
    }

    /// The tokenizer from the model's metadata.
    pub(crate) fn tokenizer(&self) -> &Tokenizer {
        match self {
            Engine::Local(m) => m.tokenizer(),
            Engine::Swarm(s) => s.client.tokenizer(),
        }
    }

    /// The chat template the model carries, if any.
    pub(crate) fn chat_template(&self) -> Option<&ChatTemplate> {
        match self {
            Engine::Local(m) => m.chat_template(),
            Engine::Swarm(s) => s.client.chat_template(),
        }
    }

    /// The prompt trained by `finetune` in `file`, checked to be for this
    /// model (`path`, as named in the swarm's DHT keys if it runs there).
    pub(crate) fn load_tuning(&self, path: &Path, file: &Path) -> Result<PromptTuning> {
        let (config, name) = match self {
            Engine::Local(m) => (m.config(), crate::commands::node::default_model_name(path)),
            Engine::Swarm(s) => (s.client.model_config(), s.name.clone()),
        };
        crate::commands::model::load_tuning(file, config, &name)
    }

    /// A fresh sequence of at most `tokens` positions, after `tuning`'s
    /// rows if given. Over the swarm its route is opened now, fitted to
    /// what the hosters can hold (so a busy swarm gives a shorter context,
    /// not a refusal).
    pub(crate) fn session(
        &self,
        tokens: usize,
        tuning: Option<&PromptTuning>,
    ) -> Result<Box<dyn LanguageModel + '_>> {
        Ok(match self {
            Engine::Local(m) => match tuning {
                Some(tuning) => Box::new(m.tuned_session(tuning)?),
                None => Box::new(m.session()),
            },
            Engine::Swarm(s) => {
                let mut session = match tuning {
                    Some(tuning) => s.client.tuned_session_for(tokens, tuning)?,
                    None => s.client.session_for(tokens),
                };
                let rows = tuning.map_or(0, PromptTuning::tokens);
                s.client
                    .handle()
                    .block_on(session.open_route(rows + 1))
                    .context("cannot open a route through the swarm")?;
                Box::new(session)
            }
        })
    }
}

impl SwarmEngine {
    /// The swarm client.
    pub(crate) fn client(&self) -> &Arc<SwarmClient> {
        &self.client
    }

    /// Joins the swarm through `args.bootstrap` as a node with a fresh
    /// identity, no chain, no span and no API: only a swarm client.
    pub(crate) fn join(path: &Path, args: &SwarmArgs, runtime: &Handle) -> Result<SwarmEngine> {
        let name = args
            .model_name
            .clone()
            .unwrap_or_else(|| crate::commands::node::default_model_name(path));
        let mut options = NodeOptions::without_chain(
            Keypair::from_secret(rand::random()),
            args.subnet_id,
            path.to_path_buf(),
        );
        options.model_name = name.clone();
        options.bootstrap = args.bootstrap.clone();
        // On every interface, so a server behind NAT that it reaches
        // through a relay can dial it back directly (hole punching: outgoing
        // connections leave from this port, which peers then observe).
        options.listen = vec!["/ip4/0.0.0.0/tcp/0".parse()?];
        options.swarm_client = true;
        options.relay = args.relay;
        let node = runtime
            .block_on(NodeBuilder::new(options).start())
            .context("cannot join the swarm")?;
        let client = node
            .swarm
            .clone()
            .context("the node keeps no swarm client")?;
        Ok(SwarmEngine {
            client,
            name,
            _node: node,
        })
    }
}
