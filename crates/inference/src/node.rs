//! P2P configuration shared by servers and clients of one model.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hypertensor_p2p::{
    Admission, Config, PeerId, RpcHandler, SchemaRegistry, StakeOracle, WallClockEpochs,
};
use hypertensor_primitives::{H256, Keypair};

use crate::announce::announce_schema;
use crate::wire::{PING_METHOD, PUSH_METHOD, SESSION_METHOD};

/// Public clients may open this many sessions or pings per second each.
const PUBLIC_CLIENT_RATE: u32 = 200;

/// A stake oracle that admits every peer: for swarms run without a chain
/// (local experiments, single-machine tests). Real deployments plug in the
/// chain's proof of stake instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl StakeOracle for AdmitAll {
    fn is_staked(&self, _peer: PeerId) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

/// Answers latency probes.
#[derive(Debug, Clone, Copy)]
struct PingHandler;

impl RpcHandler for PingHandler {
    fn handle(
        &self,
        _caller: PeerId,
        method: String,
        _body: Vec<u8>,
    ) -> BoxFuture<'static, std::result::Result<Vec<u8>, String>> {
        Box::pin(async move {
            if method == PING_METHOD {
                Ok(Vec::new())
            } else {
                Err(format!("unknown method `{method}`"))
            }
        })
    }
}

/// A P2P configuration for a node of `model`'s swarm: its announcement
/// keys, span sessions and latency pings, open to public clients.
pub fn p2p_config(
    keypair: Keypair,
    subnet_id: u32,
    genesis: H256,
    model: &str,
    stake: Arc<dyn StakeOracle>,
) -> Config {
    let schemas = SchemaRegistry::new().register(announce_schema(model));
    let phase = Arc::new(WallClockEpochs {
        epoch_length: Duration::from_secs(600),
    });
    let mut config = Config::new(keypair, subnet_id, genesis, schemas, phase, stake);
    config.admission = Admission::PublicClients {
        per_second: PUBLIC_CLIENT_RATE,
    };
    config.rpc_handler = Some(Arc::new(PingHandler));
    config.session_methods = vec![SESSION_METHOD.to_string(), PUSH_METHOD.to_string()];
    config.writes_per_epoch = 4096;
    config
}
