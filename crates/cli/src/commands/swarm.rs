//! `generate --swarm …` and `chat --swarm …`: the same commands, with the
//! transformer blocks run by the swarm's hosters instead of locally. This
//! process holds only the embedding, the head and the tokenizer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use hypertensor_inference::{AdmitAll, ClientConfig, SwarmClient, p2p_config};
use hypertensor_model::{ChatTemplate, LanguageModel, LocalModel, Tokenizer};
use hypertensor_p2p::Multiaddr;
use hypertensor_primitives::{H256, Keypair};

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
}

/// A model to generate with: all local, or ends local and blocks remote.
pub(crate) enum Engine {
    /// Every part in this process.
    Local(Box<LocalModel>),
    /// Embedding and head here, blocks on the swarm.
    Swarm(Box<SwarmEngine>),
}

/// A swarm client with the runtime and network task it needs.
pub(crate) struct SwarmEngine {
    client: SwarmClient,
    network: tokio::task::JoinHandle<()>,
    // Held, and dropped last: the client and the network task run on it.
    _runtime: tokio::runtime::Runtime,
}

impl Drop for SwarmEngine {
    fn drop(&mut self) {
        self.network.abort();
    }
}

impl Engine {
    /// The local model at `path`, or a client of the swarm for it.
    pub(crate) fn open(path: &Path, swarm: &SwarmArgs) -> Result<Engine> {
        if swarm.bootstrap.is_empty() {
            let model = LocalModel::load(path)
                .with_context(|| format!("loading model {}", path.display()))?;
            return Ok(Engine::Local(Box::new(model)));
        }
        Ok(Engine::Swarm(Box::new(SwarmEngine::join(path, swarm)?)))
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

    /// A fresh sequence of at most `tokens` positions. Over the swarm its
    /// route is opened now, fitted to what the hosters can hold (so a
    /// busy swarm gives a shorter context, not a refusal).
    pub(crate) fn session(&self, tokens: usize) -> Result<Box<dyn LanguageModel + '_>> {
        Ok(match self {
            Engine::Local(m) => Box::new(m.session()),
            Engine::Swarm(s) => {
                let mut session = s.client.session_for(tokens);
                s.client
                    .handle()
                    .block_on(session.open_route(1))
                    .context("cannot open a route through the swarm")?;
                Box::new(session)
            }
        })
    }
}

impl SwarmEngine {
    fn join(path: &Path, args: &SwarmArgs) -> Result<SwarmEngine> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let name = args
            .model_name
            .clone()
            .unwrap_or_else(|| crate::commands::node::default_model_name(path));
        let mut config = p2p_config(
            Keypair::from_secret(rand::random()),
            args.subnet_id,
            H256([0; 32]),
            &name,
            Arc::new(AdmitAll),
        );
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().context("listen address")?];
        config.bootstrap = args.bootstrap.clone();
        let (p2p, events, event_loop) = {
            let _guard = runtime.enter();
            hypertensor_p2p::new(config).context("cannot start the P2P node")?
        };
        drop(events);
        let network = runtime.spawn(event_loop.run());
        runtime.block_on(async {
            // Wait (briefly) until the bootstrap peer is in the routing table.
            p2p.wait_for_peers(Duration::from_secs(5)).await;
        });
        let client = SwarmClient::load(
            path,
            p2p,
            runtime.handle().clone(),
            ClientConfig::new(&name),
        )?;
        Ok(SwarmEngine {
            client,
            network,
            _runtime: runtime,
        })
    }
}
