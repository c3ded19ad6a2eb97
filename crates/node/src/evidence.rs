//! Filing the evidence clients hand over (verified serving): a staked node
//! checks each piece and files it in the DHT under `evidence/<e>`, where
//! validators score the convicted hoster 0 for `e`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hypertensor_consensus::evidence::{Evidence, MAX_EVIDENCE_PER_RECORD, encode_evidence_record};
use hypertensor_consensus::phase::{PhaseParams, Position, RecordKind, Writer};
use hypertensor_inference::EvidenceInbox;
use hypertensor_p2p::{Client, now_ms};

use crate::clock::ChainClock;

/// How often the filer looks at the clock while waiting for a window.
const POLL: Duration = Duration::from_millis(250);
/// Attempts to store one record before giving up on it.
const STORE_ATTEMPTS: usize = 5;

/// Files the evidence arriving on `inbox` for a model of `hidden_size`:
/// each piece that verifies joins this node's `evidence/<e>` record for
/// the epoch whose window is open (or the next one, when the window is
/// closed or closes within a block), and the record is stored with
/// lifetime `ttl`. Pieces that do not verify are dropped and logged.
/// Runs until the node stops.
pub(crate) async fn file_evidence(
    mut inbox: EvidenceInbox,
    p2p: Client,
    clock: Arc<ChainClock>,
    phases: PhaseParams,
    hidden_size: usize,
    ttl: Duration,
) {
    let genesis = p2p.genesis();
    let mut filed: BTreeMap<u64, Vec<Evidence>> = BTreeMap::new();
    while let Some((from, bytes)) = inbox.recv().await {
        let evidence = match Evidence::decode(&bytes) {
            Ok(evidence) => evidence,
            Err(e) => {
                tracing::info!(%from, error = %e, "evidence refused: does not decode");
                continue;
            }
        };
        match evidence.verify(&genesis, hidden_size) {
            Ok(accused) => tracing::info!(%from, %accused, "evidence verified; filing it"),
            Err(e) => {
                tracing::info!(%from, error = %e, "evidence refused: does not verify");
                continue;
            }
        }
        let epoch = filing_epoch(&clock, &phases);
        let pieces = filed.entry(epoch).or_default();
        if pieces.contains(&evidence) || pieces.len() >= MAX_EVIDENCE_PER_RECORD {
            continue;
        }
        pieces.push(evidence);
        let record = encode_evidence_record(pieces);
        filed.retain(|e, _| *e + 3 > epoch);
        store_in_window(&p2p, &clock, &phases, epoch, record, ttl).await;
    }
    // The inbox closes only with the P2P layer, as the node stops.
    std::future::pending::<()>().await;
}

/// The epoch evidence filed now counts for: this one while its window has
/// more than a block to run, else the next.
fn filing_epoch(clock: &ChainClock, phases: &PhaseParams) -> u64 {
    let now = clock.position();
    let next_block = Position::at(clock.height() + 1, clock.epoch_length()).unwrap_or(now);
    let open = |at: Position| phases.may_write(RecordKind::Evidence, now.epoch, at, Writer::Other);
    if open(now) && open(next_block) {
        now.epoch
    } else {
        now.epoch + 1
    }
}

/// Stores `record` under `evidence/<epoch>` once that window is open,
/// retrying a failed store; gives up when the window has passed.
async fn store_in_window(
    p2p: &Client,
    clock: &ChainClock,
    phases: &PhaseParams,
    epoch: u64,
    record: Vec<u8>,
    ttl: Duration,
) {
    let key = RecordKind::Evidence.key(epoch);
    let mut attempts = 0;
    loop {
        let now = clock.position();
        if now.epoch > epoch {
            tracing::warn!(%key, "evidence not filed before its window closed");
            return;
        }
        if !phases.may_write(RecordKind::Evidence, epoch, now, Writer::Other) {
            tokio::time::sleep(POLL).await;
            continue;
        }
        let expiration = now_ms() + ttl.as_millis() as u64;
        match p2p.store(&key, record.clone(), expiration).await {
            Ok(()) => {
                tracing::info!(%key, "evidence filed");
                return;
            }
            Err(e) => {
                attempts += 1;
                tracing::info!(%key, error = %e, attempts, "filing evidence failed");
                if attempts >= STORE_ATTEMPTS {
                    return;
                }
                tokio::time::sleep(POLL * 4).await;
            }
        }
    }
}
