//! Hands finalized blocks from marshal to the [`Host`] in height order,
//! and acknowledges each one only after the host committed it.
//!
//! Marshal delivers a block at least once: after a restart it replays
//! every block above the last acknowledged height, so a block the host
//! already has is acknowledged again without a second commit. A block
//! executed while it was being voted on commits its kept state; a block
//! that arrived by backfill is executed here on the finalized state.

use std::sync::Arc;

use commonware_actor::Feedback;
use commonware_consensus::Reporter;
use commonware_consensus::marshal::Update;
use commonware_utils::acknowledgement::Acknowledgement;
use commonware_utils::channel::mpsc;
use hypertensor_runtime::apply_block;

use crate::app::{Executed, Host, Speculative};
use crate::block::ChainBlock;

/// Marshal's reporter for finalized blocks: queues them for
/// [`run_finalizer`].
#[derive(Clone)]
pub struct FinalizedBlocks {
    queue: mpsc::UnboundedSender<Update<ChainBlock>>,
}

impl FinalizedBlocks {
    /// A reporter and the queue [`run_finalizer`] drains.
    pub fn new() -> (FinalizedBlocks, mpsc::UnboundedReceiver<Update<ChainBlock>>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        (FinalizedBlocks { queue }, receiver)
    }
}

impl Reporter for FinalizedBlocks {
    type Activity = Update<ChainBlock>;

    fn report(&mut self, update: Update<ChainBlock>) -> Feedback {
        match self.queue.send(update) {
            Ok(()) => Feedback::Ok,
            Err(_) => Feedback::Closed,
        }
    }
}

/// Why finalization stopped on this node.
#[derive(Debug, thiserror::Error)]
pub enum FinalizerError {
    /// A quorum finalized a block this node cannot execute: its runtime or
    /// genesis differs from the other validators'.
    #[error("finalized block {height} ({hash}) does not execute here: {reason}")]
    Diverged {
        /// Height of the block.
        height: u64,
        /// Its hash.
        hash: String,
        /// The runtime's error.
        reason: String,
    },
    /// The host could not commit a block.
    #[error("cannot commit finalized block {height}: {reason}")]
    Commit {
        /// Height of the block.
        height: u64,
        /// The host's error.
        reason: String,
    },
}

/// Commits finalized blocks until the queue closes (marshal stopped) or a
/// block cannot be executed or committed.
pub async fn run_finalizer(
    mut queue: mpsc::UnboundedReceiver<Update<ChainBlock>>,
    host: Arc<dyn Host>,
    speculative: Speculative,
) -> Result<(), FinalizerError> {
    while let Some(update) = queue.recv().await {
        let (block, ack) = match update {
            Update::Tip(_, height, _) => {
                host.finalized_tip(height.get());
                continue;
            }
            Update::Block(block, ack) => (block, ack),
        };
        let block = block.inner();
        let finalized = host.finalized();
        if block.number() <= finalized.height() {
            ack.acknowledge();
            continue;
        }
        let executed = match speculative
            .get(&block.hash())
            .filter(|e| e.state.height() == finalized.height() + 1)
        {
            Some(executed) => executed,
            None => match apply_block(&finalized, block.block()) {
                Ok((state, events)) => Executed {
                    state: Arc::new(state),
                    events: Arc::new(events),
                },
                Err(e) => {
                    return Err(FinalizerError::Diverged {
                        height: block.number(),
                        hash: block.hash().to_string(),
                        reason: e.to_string(),
                    });
                }
            },
        };
        host.commit(block, &executed)
            .map_err(|reason| FinalizerError::Commit {
                height: block.number(),
                reason,
            })?;
        speculative.prune(block.number());
        ack.acknowledge();
    }
    Ok(())
}
