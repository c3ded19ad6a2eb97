//! Proof of stake for the DHT and RPC, asked of the chain.

use std::sync::Arc;

use futures::future::BoxFuture;
use hypertensor_chain_client::Error as ChainError;
use hypertensor_p2p::StakeLookup;
use hypertensor_runtime::{NodeClass, SubnetId};

use crate::chain::ChainConnection;

/// Longest a proof-of-stake question may wait for the chain (the DHT's
/// validators wait on it).
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks the chain whether a peer is a node of the subnet (any class from
/// Registered up): the [`StakeLookup`] behind a node's
/// [`CachingStakeOracle`](hypertensor_p2p::CachingStakeOracle).
#[derive(Clone)]
pub struct ChainStake {
    chain: Arc<ChainConnection>,
    subnet: SubnetId,
    min_class: NodeClass,
}

impl ChainStake {
    /// Proof of stake in `subnet`, for nodes of at least `min_class`.
    pub fn new(chain: Arc<ChainConnection>, subnet: SubnetId, min_class: NodeClass) -> Self {
        ChainStake {
            chain,
            subnet,
            min_class,
        }
    }
}

/// The chain's peer id of a libp2p peer id (the same multihash bytes).
pub fn chain_peer_id(
    peer: &hypertensor_p2p::PeerId,
) -> Result<hypertensor_primitives::PeerId, String> {
    hypertensor_primitives::PeerId::from_bytes(&peer.to_bytes())
        .map_err(|e| format!("peer id {peer} has no chain form: {e}"))
}

impl StakeLookup for ChainStake {
    fn lookup(
        &self,
        peer: hypertensor_p2p::PeerId,
    ) -> BoxFuture<'_, std::result::Result<bool, String>> {
        Box::pin(async move {
            let Ok(peer_id) = chain_peer_id(&peer) else {
                // Not an Ed25519 peer id: it cannot be a node of the chain.
                return Ok(false);
            };
            let client = self.chain.client().await;
            let asked = client.proof_of_stake(self.subnet, &peer_id, self.min_class);
            let Ok(answer) = tokio::time::timeout(LOOKUP_TIMEOUT, asked).await else {
                return Err(format!(
                    "proof of stake of {peer}: the chain did not answer in {LOOKUP_TIMEOUT:?}"
                ));
            };
            match answer {
                Ok(staked) => Ok(staked),
                Err(e) => {
                    if matches!(e, ChainError::Closed) {
                        self.chain.reconnect_in_background(client);
                    }
                    Err(format!("proof of stake of {peer}: {e}"))
                }
            }
        })
    }
}
