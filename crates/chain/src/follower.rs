//! A full node: follows the validators' finalized blocks over their RPC,
//! trusting none of them. A block range is accepted only when a
//! finalization certificate signed by a quorum of the genesis validators
//! certifies its last block and every block hash-links to the one
//! before; each block is then executed (its state root must match) and
//! committed like a validator commits. Transactions submitted to a full
//! node are forwarded to the validator it follows.

use std::sync::Arc;
use std::time::Duration;

use hypertensor_bft::{ChainBlock, Executed, FinalityVerifier};
use hypertensor_chain_client::{BlockId, Client, HeaderInfo};
use hypertensor_runtime::{Extrinsic, apply_block};
use tokio::sync::{mpsc, watch};

use crate::node::{Shared, commit_finalized};
use crate::{Error, Result};

/// Most blocks accepted under one certificate (a full node far behind
/// catches up in steps of this many).
const MAX_STEP: u64 = 256;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why following one validator stopped.
enum Interrupted {
    /// Shutdown was asked for.
    Stopped,
    /// The validator is unreachable or misbehaved: try the next one.
    Validator(String),
    /// This node cannot go on (its store failed, or a certified block
    /// does not execute here).
    Fatal(Error),
}

impl From<hypertensor_chain_client::Error> for Interrupted {
    fn from(e: hypertensor_chain_client::Error) -> Interrupted {
        Interrupted::Validator(e.to_string())
    }
}

/// Follows the validators at `urls` until shutdown or a fatal error.
pub(crate) async fn follow(
    shared: Arc<Shared>,
    urls: String,
    verifier: FinalityVerifier,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut backoff = Duration::from_millis(250);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let outcome = match Client::connect(&urls).await {
            Ok(client) => {
                backoff = Duration::from_millis(250);
                follow_one(&shared, &client, &verifier, &mut outgoing, &mut stop).await
            }
            Err(e) => Interrupted::Validator(e.to_string()),
        };
        match outcome {
            Interrupted::Stopped => return Ok(()),
            Interrupted::Fatal(e) => return Err(e),
            Interrupted::Validator(reason) => {
                tracing::warn!(%urls, %reason, ?backoff, "following the validators; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn follow_one(
    shared: &Shared,
    client: &Client,
    verifier: &FinalityVerifier,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    stop: &mut watch::Receiver<bool>,
) -> Interrupted {
    let mut heads = match client.subscribe_new_heads().await {
        Ok(heads) => heads,
        Err(e) => return e.into(),
    };
    let mut pending: Option<HeaderInfo> = match client.header(None).await {
        Ok(head) => head,
        Err(e) => return e.into(),
    };
    loop {
        if let Some(head) = pending.take()
            && let Err(interrupted) = catch_up(shared, client, verifier, &head).await
        {
            return interrupted;
        }
        tokio::select! {
            head = heads.next() => match head {
                Some(Ok(head)) => pending = Some(head),
                Some(Err(e)) => return e.into(),
                None => return Interrupted::Validator("its head subscription ended".into()),
            },
            submitted = outgoing.recv() => {
                let Some(bytes) = submitted else { return Interrupted::Stopped };
                if let Ok(xt) = serde_json::from_slice::<Extrinsic>(&bytes)
                    && let Err(e) = client.submit_extrinsic(&xt).await
                {
                    tracing::warn!(error = %e, "cannot forward a transaction to the validator");
                }
            }
            _ = stop.changed() => return Interrupted::Stopped,
        }
    }
}

/// Brings the node up to `head` (or [`MAX_STEP`] blocks towards it), one
/// certified range at a time.
async fn catch_up(
    shared: &Shared,
    client: &Client,
    verifier: &FinalityVerifier,
    head: &HeaderInfo,
) -> std::result::Result<(), Interrupted> {
    // What the validators say they have finalized: this node's finality
    // lag and readiness are measured against it until it catches up.
    shared
        .finalized_tip
        .fetch_max(head.header.height, std::sync::atomic::Ordering::Relaxed);
    loop {
        let ours = shared.state().height();
        if head.header.height <= ours {
            return Ok(());
        }
        // A certificate for the end of this step: the step's last block
        // if the validator kept one for it, else the head's.
        let step_end = head.header.height.min(ours + MAX_STEP);
        let mut target = client
            .header(Some(BlockId::Height(step_end)))
            .await?
            .ok_or_else(|| Interrupted::Validator(format!("it has no block {step_end}")))?;
        let mut certificate = client.finalization(target.hash).await?;
        if certificate.is_none() && step_end != head.header.height {
            target = head.clone();
            certificate = client.finalization(target.hash).await?;
        }
        let Some(certificate) = certificate else {
            // Not every block has a certificate of its own: wait for the
            // next head.
            return Ok(());
        };
        let bytes = hex::decode(&certificate)
            .map_err(|_| Interrupted::Validator("its certificate is not hex".into()))?;
        verifier.verify(&target.hash, &bytes).map_err(|e| {
            Interrupted::Validator(format!(
                "its certificate for block {} is refused: {e}",
                target.header.height
            ))
        })?;
        let mut blocks = Vec::new();
        for height in ours + 1..=target.header.height {
            let info = client
                .block(Some(BlockId::Height(height)))
                .await?
                .ok_or_else(|| Interrupted::Validator(format!("it has no block {height}")))?;
            blocks.push(info.block);
        }
        // The range must hash-link our best block to the certified one.
        let mut parent = shared.state().best_hash();
        for block in &blocks {
            if block.header.parent_hash != parent {
                return Err(Interrupted::Validator(format!(
                    "its block {} does not extend block {}",
                    block.header.height,
                    block.header.height - 1
                )));
            }
            parent = block.hash();
        }
        if parent != target.hash {
            return Err(Interrupted::Validator(
                "its blocks do not lead to the certified block".into(),
            ));
        }
        for block in blocks {
            let state = shared.state();
            let (next, events) = apply_block(&state, &block).map_err(|e| {
                Interrupted::Fatal(Error::Consensus(format!(
                    "certified block {} does not execute here: {e}",
                    block.header.height
                )))
            })?;
            let executed = Executed {
                state: Arc::new(next),
                events: Arc::new(events),
            };
            commit_finalized(shared, &ChainBlock::new(block), &executed)
                .map_err(Interrupted::Fatal)?;
        }
    }
}
