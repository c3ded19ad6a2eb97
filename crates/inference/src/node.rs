//! P2P configuration shared by servers and clients of one model.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hypertensor_p2p::{
    Admission, Config, PeerId, RpcHandler, SchemaRegistry, StakeOracle, WallClockEpochs,
};
use hypertensor_primitives::{H256, Keypair};

use crate::announce::announce_schema;
use crate::spot_check::EVIDENCE_METHOD;
use crate::wire::{PING_METHOD, PUSH_METHOD, SESSION_METHOD};
use tokio::sync::mpsc;

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

/// Evidence handed to this node by a client (the client and the bytes),
/// to be checked and filed in the DHT by the node.
pub type EvidenceInbox = mpsc::Receiver<(PeerId, Vec<u8>)>;

/// Evidence a node holds before refusing more.
const EVIDENCE_QUEUE: usize = 64;

/// Answers latency probes and, on a node that files evidence, takes
/// evidence from clients.
#[derive(Debug, Clone)]
struct InferenceRpc {
    evidence: Option<mpsc::Sender<(PeerId, Vec<u8>)>>,
}

impl RpcHandler for InferenceRpc {
    fn handle(
        &self,
        caller: PeerId,
        method: String,
        body: Vec<u8>,
    ) -> BoxFuture<'static, std::result::Result<Vec<u8>, String>> {
        let evidence = self.evidence.clone();
        Box::pin(async move {
            if method == PING_METHOD {
                Ok(Vec::new())
            } else if method == EVIDENCE_METHOD {
                let inbox = evidence.ok_or("this node does not file evidence")?;
                if body.len() > hypertensor_consensus::evidence::MAX_EVIDENCE_BYTES {
                    return Err(format!("evidence of {} bytes is too large", body.len()));
                }
                inbox
                    .try_send((caller, body))
                    .map(|()| Vec::new())
                    .map_err(|_| "evidence inbox full; try another witness".to_string())
            } else {
                Err(format!("unknown method `{method}`"))
            }
        })
    }
}

/// Makes the node behind `config` take evidence from clients
/// ([`EVIDENCE_METHOD`]): what arrives comes out of the returned inbox,
/// unchecked, for the node to verify and file.
pub fn take_evidence(config: &mut Config) -> EvidenceInbox {
    let (tx, rx) = mpsc::channel(EVIDENCE_QUEUE);
    config.rpc_handler = Some(Arc::new(InferenceRpc { evidence: Some(tx) }));
    rx
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
    config.rpc_handler = Some(Arc::new(InferenceRpc { evidence: None }));
    config.session_methods = vec![
        SESSION_METHOD.to_string(),
        PUSH_METHOD.to_string(),
        crate::train::TRAIN_METHOD.to_string(),
    ];
    config.writes_per_epoch = 4096;
    config
}
