//! Filing the evidence clients hand over (verified serving): a staked node
//! checks each piece and files it in the DHT under `evidence/<e>`, where
//! validators score the convicted hoster 0 for `e`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hypertensor_consensus::evidence::{
    Evidence, MAX_EVIDENCE_BYTES, MAX_EVIDENCE_PER_RECORD, encode_evidence_record,
};
use hypertensor_consensus::phase::{PhaseParams, Position, RecordKind, Writer};
use hypertensor_inference::EvidenceInbox;
use hypertensor_p2p::{Client, StakeLookup, now_ms};

use crate::clock::ChainClock;

/// How often the filer looks at the clock while waiting for a window.
const POLL: Duration = Duration::from_millis(250);
/// Attempts to store one record before giving up on it.
const STORE_ATTEMPTS: usize = 5;

/// What filing needs to know.
pub(crate) struct Filing {
    /// The chain's epoch, for the window.
    pub(crate) clock: Arc<ChainClock>,
    /// The windows.
    pub(crate) phases: PhaseParams,
    /// Whether a peer is a staked node of the subnet.
    pub(crate) stake: Arc<dyn StakeLookup>,
    /// The model's name (receipts must be for it).
    pub(crate) model: String,
    /// The model's hidden size.
    pub(crate) hidden_size: usize,
    /// Lifetime of the records stored.
    pub(crate) ttl: Duration,
}

/// Files the evidence arriving on `inbox`: each piece that verifies, and
/// whose servers (accused and witnesses) are all staked nodes of the
/// subnet, joins this node's `evidence/<e>` record for the epoch whose
/// window is open (or the next one, when the window is closed or closes
/// within a block), as long as the record stays within its bounds; each
/// version of the record is stored by its own task, once its window is
/// open, so the inbox is always read. Anything else is dropped and
/// logged. Runs until the node stops.
pub(crate) async fn file_evidence(mut inbox: EvidenceInbox, p2p: Client, filing: Filing) {
    let genesis = p2p.genesis();
    let filing = Arc::new(filing);
    let mut filed: BTreeMap<u64, Vec<Evidence>> = BTreeMap::new();
    while let Some((from, bytes)) = inbox.recv().await {
        let evidence = match Evidence::decode(&bytes) {
            Ok(evidence) => evidence,
            Err(e) => {
                tracing::info!(%from, error = %e, "evidence refused: does not decode");
                continue;
            }
        };
        let accused = match evidence.verify(&genesis, &filing.model, filing.hidden_size) {
            Ok(accused) => accused.clone(),
            Err(e) => {
                tracing::info!(%from, error = %e, "evidence refused: does not verify");
                continue;
            }
        };
        if !all_staked(filing.stake.as_ref(), &evidence).await {
            tracing::info!(%from, %accused, "evidence refused: names a server that is not staked here");
            continue;
        }
        let epoch = filing_epoch(&filing.clock, &filing.phases);
        filed.retain(|e, _| *e + 3 > epoch);
        let pieces = filed.entry(epoch).or_default();
        if pieces.contains(&evidence) || pieces.len() >= MAX_EVIDENCE_PER_RECORD {
            continue;
        }
        pieces.push(evidence);
        let record = encode_evidence_record(pieces);
        if record.len() > MAX_EVIDENCE_BYTES {
            pieces.pop();
            tracing::info!(%from, "evidence not filed: this epoch's record is full");
            continue;
        }
        tracing::info!(%from, %accused, epoch, "evidence verified; filing it");
        // Set now, so a later version of the record always expires later
        // and wins wherever two versions meet, whichever is stored last.
        let expiration = now_ms() + filing.ttl.as_millis() as u64;
        tokio::spawn(store_in_window(
            p2p.clone(),
            filing.clone(),
            epoch,
            record,
            expiration,
        ));
    }
    // The inbox closes only with the P2P layer, as the node stops.
    std::future::pending::<()>().await;
}

/// Whether every server `evidence` names is a staked node of the subnet
/// (a lookup that fails counts as no).
async fn all_staked(stake: &dyn StakeLookup, evidence: &Evidence) -> bool {
    for server in evidence.servers() {
        let Ok(peer) = hypertensor_p2p::PeerId::from_bytes(server.as_bytes()) else {
            return false;
        };
        if !matches!(stake.lookup(peer).await, Ok(true)) {
            return false;
        }
    }
    true
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
    p2p: Client,
    filing: Arc<Filing>,
    epoch: u64,
    record: Vec<u8>,
    expiration: u64,
) {
    let key = RecordKind::Evidence.key(epoch);
    let mut attempts = 0;
    loop {
        let now = filing.clock.position();
        if now.epoch > epoch {
            tracing::warn!(%key, "evidence not filed before its window closed");
            return;
        }
        if !filing
            .phases
            .may_write(RecordKind::Evidence, epoch, now, Writer::Other)
        {
            tokio::time::sleep(POLL).await;
            continue;
        }
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
