//! The application simplex drives through marshal: it builds a block from
//! the pool on the leader, and on every validator executes a proposal on
//! its parent's state before voting for it.
//!
//! States after blocks that are notarized but not yet finalized live only
//! here, keyed by block hash ([`Speculative`]); the [`Host`] (the chain
//! node, or a test's in-memory ledger) holds the finalized state and
//! commits only what [`crate::finalizer`] hands it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use commonware_consensus::Application;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::types::Context;
use commonware_cryptography::ed25519::PublicKey;
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{Digested, Digestible};
use commonware_runtime::Clock;
use futures::StreamExt;
use hypertensor_primitives::{AccountId, H256};
use hypertensor_runtime::{BuiltBlock, EventRecord, State, apply_block, apply_block_with};

use crate::block::ChainBlock;

/// How far ahead of a validator's clock a block's timestamp may be.
pub const MAX_FUTURE_DRIFT: Duration = Duration::from_secs(10);

/// Most unfinalized blocks a proposal or verification replays to find its
/// parent's state (beyond that the parent is too far from finality to
/// build on).
const MAX_REPLAY: usize = 256;

/// What the BFT glue needs from the node that owns the finalized chain.
pub trait Host: Send + Sync + 'static {
    /// The state after the latest finalized block.
    fn finalized(&self) -> Arc<State>;

    /// Builds a block on `parent` from the transaction pool, authored by
    /// `author` at `timestamp_ms`.
    fn build(
        &self,
        parent: &State,
        author: AccountId,
        timestamp_ms: u64,
    ) -> hypertensor_runtime::Result<BuiltBlock>;

    /// Commits a finalized block (it extends the latest finalized block).
    /// An error stops finalization on this node: it must not run ahead of
    /// its disk.
    fn commit(&self, block: &ChainBlock, executed: &Executed) -> Result<(), String>;

    /// Told of the finalized tip as soon as consensus knows it (before the
    /// block is committed here); for finality-lag reporting.
    fn finalized_tip(&self, _height: u64) {}

    /// Told of conflicting votes by one validator (already verified).
    fn evidence(&self, _evidence: crate::evidence::Evidence) {}

    /// Whether the extrinsic `hash` was already verified against this
    /// chain (for example at admission to the pool), so executing a
    /// proposal can skip its signature check.
    fn verified(&self, _extrinsic: &H256) -> bool {
        false
    }

    /// The finalization certificate of block `hash` (commonware's
    /// encoding), as soon as consensus forms it.
    fn finalization(&self, _hash: H256, _certificate: Vec<u8>) {}

    /// A transaction another validator's users submitted (its bytes as
    /// sent, unchecked): check it and pool it like a submission.
    fn gossiped(&self, _from: &AccountId, _transaction: &[u8]) {}
}

/// A block's execution: the state after it and its events.
#[derive(Clone, Debug)]
pub struct Executed {
    /// The state after the block.
    pub state: Arc<State>,
    /// The events it emitted.
    pub events: Arc<Vec<EventRecord>>,
}

/// States after unfinalized blocks, by block hash.
#[derive(Clone, Default)]
pub struct Speculative {
    states: Arc<Mutex<HashMap<H256, Executed>>>,
}

impl Speculative {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<H256, Executed>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The execution of the block `hash`, if it was built or verified here.
    pub fn get(&self, hash: &H256) -> Option<Executed> {
        self.lock().get(hash).cloned()
    }

    fn insert(&self, hash: H256, executed: Executed) {
        self.lock().insert(hash, executed);
    }

    /// Forgets every block at or below `height` (finalized, or on a fork
    /// finality abandoned).
    pub fn prune(&self, height: u64) {
        self.lock().retain(|_, e| e.state.height() > height);
    }

    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The chain application (see the module docs).
#[derive(Clone)]
pub struct ChainApp {
    host: Arc<dyn Host>,
    speculative: Speculative,
    block_time: Duration,
}

impl ChainApp {
    /// An application over `host`, sharing `speculative` with the
    /// finalizer; a leader proposes no sooner than `block_time` after its
    /// parent's timestamp.
    pub fn new(host: Arc<dyn Host>, speculative: Speculative, block_time: Duration) -> ChainApp {
        ChainApp {
            host,
            speculative,
            block_time,
        }
    }

    /// The state after `hash`, if it is the finalized tip or a block
    /// executed here.
    fn known(&self, hash: &H256) -> Option<Arc<State>> {
        if let Some(e) = self.speculative.get(hash) {
            return Some(e.state);
        }
        let finalized = self.host.finalized();
        (finalized.best_hash() == *hash).then_some(finalized)
    }

    /// The state after the first block of `ancestry`, replaying blocks
    /// this node has not executed (for example after a restart). `None`
    /// when the ancestry does not reach the finalized tip.
    async fn state_after(&self, mut ancestry: impl Ancestry<ChainBlock>) -> Option<Arc<State>> {
        let mut missing: Vec<Digested<ChainBlock>> = Vec::new();
        let floor = self.host.finalized().height();
        let mut state = loop {
            let block = ancestry.next().await?;
            if let Some(state) = self.known(&block.inner().hash()) {
                break state;
            }
            if block.inner().number() <= floor || missing.len() >= MAX_REPLAY {
                return None;
            }
            missing.push(block);
        };
        for block in missing.iter().rev() {
            let (next, events) = apply_block(&state, block.inner().block()).ok()?;
            state = Arc::new(next);
            self.speculative.insert(
                block.inner().hash(),
                Executed {
                    state: Arc::clone(&state),
                    events: Arc::new(events),
                },
            );
        }
        Some(state)
    }
}

/// The account of a validator's consensus key (the same ed25519 key).
pub fn account_of(key: &PublicKey) -> AccountId {
    let mut out = [0u8; 32];
    out.copy_from_slice(key.as_ref());
    AccountId(out)
}

fn unix_ms(clock: &impl Clock) -> u64 {
    clock
        .current()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<E: Clock + Send + Sync + 'static> Application<E> for ChainApp {
    type SigningScheme = Scheme;
    type Context = Context<Digest, PublicKey>;
    type Block = ChainBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (clock, context): (E, Self::Context),
        ancestry: impl Ancestry<ChainBlock>,
        _input: (),
    ) -> Option<Digested<ChainBlock>> {
        let parent = self.state_after(ancestry).await?;
        let due = parent
            .timestamp_ms()
            .saturating_add(self.block_time.as_millis() as u64);
        let now = unix_ms(&clock);
        if now < due {
            clock.sleep(Duration::from_millis(due - now)).await;
        }
        let timestamp = unix_ms(&clock).max(parent.timestamp_ms());
        let built = match self
            .host
            .build(&parent, account_of(&context.leader), timestamp)
        {
            Ok(built) => built,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a block");
                return None;
            }
        };
        let block = ChainBlock::new(built.block);
        self.speculative.insert(
            block.hash(),
            Executed {
                state: Arc::new(built.state),
                events: Arc::new(built.events),
            },
        );
        tracing::debug!(height = block.number(), hash = %block.hash(), "proposing");
        let digest = block.digest();
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(
        &mut self,
        (clock, context): (E, Self::Context),
        mut ancestry: impl Ancestry<ChainBlock>,
    ) -> bool {
        let Some(candidate) = ancestry.next().await else {
            return false;
        };
        let block = candidate.inner();
        let header = &block.block().header;
        let reject = |reason: &str| {
            tracing::warn!(
                height = header.height,
                hash = %block.hash(),
                leader = %context.leader,
                reason,
                "proposal refused"
            );
            false
        };
        if header.author != account_of(&context.leader) {
            return reject("the author is not the round's leader");
        }
        let now = unix_ms(&clock);
        if header.timestamp_ms > now.saturating_add(MAX_FUTURE_DRIFT.as_millis() as u64) {
            return reject("the timestamp is too far in the future");
        }
        let Some(parent) = self.state_after(ancestry).await else {
            return reject("the parent does not descend from the finalized chain");
        };
        let host = &self.host;
        match apply_block_with(&parent, block.block(), &|hash| host.verified(hash)) {
            Ok((state, events)) => {
                self.speculative.insert(
                    block.hash(),
                    Executed {
                        state: Arc::new(state),
                        events: Arc::new(events),
                    },
                );
                true
            }
            Err(e) => reject(&e.to_string()),
        }
    }
}
