//! The node's one follower of the chain's new heads: it moves the DHT's
//! phase clock and publishes each head's height on a `watch` channel that
//! every consumer (the consensus loop, status displays) reads, so a node
//! holds one head subscription whatever runs on it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::chain::ChainConnection;
use crate::clock::{ChainClock, HEAD_SILENCE};

/// Pause before reconnecting after the head subscription ended.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(250);

/// Follows the chain's heads for one node. Build with
/// [`HeadFollower::new`], hand [`HeadFollower::subscribe`]'s receivers to
/// the consumers, then [`HeadFollower::run`] it as a critical task.
pub struct HeadFollower {
    chain: Arc<ChainConnection>,
    clock: Arc<ChainClock>,
    heads: watch::Sender<u64>,
}

impl HeadFollower {
    /// A follower of `chain` moving `clock`; the channel starts at the
    /// clock's height.
    pub fn new(chain: Arc<ChainConnection>, clock: Arc<ChainClock>) -> Self {
        let heads = watch::Sender::new(clock.height());
        HeadFollower {
            chain,
            clock,
            heads,
        }
    }

    /// The latest head's height; `changed()` completes at each new head.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.heads.subscribe()
    }

    /// Follows the heads forever. When the subscription ends, fails, or
    /// stays silent for [`HEAD_SILENCE`] (the chain node restarted, the
    /// socket broke), it reconnects with backoff and subscribes again.
    /// Cancel-safe: dropping it only ends the subscription.
    pub async fn run(self) {
        loop {
            let client = self.chain.client().await;
            match client.subscribe_new_heads().await {
                Ok(mut heads) => loop {
                    match tokio::time::timeout(HEAD_SILENCE, heads.next()).await {
                        Ok(Some(Ok(head))) => {
                            let height = head.header.height;
                            self.clock.set_height(height);
                            self.heads.send_replace(height);
                        }
                        Ok(Some(Err(e))) => tracing::warn!(error = %e, "bad head notification"),
                        Ok(None) => break,
                        Err(_) => {
                            tracing::warn!(?HEAD_SILENCE, "no new head for too long");
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot follow the chain's heads"),
            }
            tracing::warn!("lost the chain's heads; reconnecting");
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
            self.chain.reconnect(&client).await;
        }
    }
}
