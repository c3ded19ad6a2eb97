//! One validator's consensus stack, wired on any commonware runtime and
//! any commonware P2P network (the tokio runtime with
//! `p2p::authenticated::lookup` in the chain node; the deterministic
//! runtime with the simulated network in tests).
//!
//! ```text
//!   simplex (votes, certificates, its resolver) ─ Inline ─ ChainApp (propose / verify)
//!        │ reporter: Inline (to marshal) + EvidenceReporter
//!        v
//!   marshal ── buffered broadcast (blocks) ── backfill resolver
//!        │ Update::Block in height order, acknowledged after commit
//!        v
//!   finalizer ── Host::commit
//! ```

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_consensus::Reporters;
use commonware_consensus::marshal::resolver::p2p as backfill;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::marshal::{self, Start, core::Actor as Marshal};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::{self, ForwardPolicy, SkipBudget, SkipPolicy};
use commonware_consensus::types::{Epoch, FixedEpocher, ViewDelta};
use commonware_cryptography::certificate::ConstantProvider;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::{Digested, Digestible, Sha256, Signer as _};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::ordered::Set;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize};
use hypertensor_primitives::H256;
use rand_core::CryptoRng;

use crate::app::{ChainApp, Host, Speculative};
use crate::block::{BlockCodec, ChainBlock};
use crate::evidence::EvidenceReporter;
use crate::finalizer::{FinalizedBlocks, FinalizerError, run_finalizer};

/// P2P channel of votes.
pub const CHANNEL_VOTES: u64 = 0;
/// P2P channel of certificates.
pub const CHANNEL_CERTIFICATES: u64 = 1;
/// P2P channel of simplex's certificate fetches.
pub const CHANNEL_RESOLVER: u64 = 2;
/// P2P channel of marshal's block backfill.
pub const CHANNEL_BACKFILL: u64 = 3;
/// P2P channel of proposed blocks.
pub const CHANNEL_BLOCKS: u64 = 4;
/// P2P channel of submitted transactions (mempool gossip).
pub const CHANNEL_TRANSACTIONS: u64 = 5;
/// P2P channel of genesis hellos (who runs which chain).
pub const CHANNEL_HELLO: u64 = 6;

/// The consensus namespace of a chain: every vote binds its genesis hash,
/// so validators of two chains can never count each other's votes.
pub fn namespace(genesis: &H256) -> Vec<u8> {
    let mut out = b"hypertensor/bft/v1/".to_vec();
    out.extend_from_slice(&genesis.0);
    out
}

/// The pacing and timeouts of consensus, derived from the block time.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Least time between a block and its child (the leader waits).
    pub block_time: Duration,
    /// A view without a proposal by then is voted to be skipped.
    pub leader_timeout: Duration,
    /// A view not certified by then is voted to be skipped.
    pub certification_timeout: Duration,
    /// Interval of re-sent skip votes.
    pub timeout_retry: Duration,
}

impl Timing {
    /// Timeouts that leave a leader its block time plus a margin.
    pub fn for_block_time(block_time: Duration) -> Timing {
        let leader_timeout = block_time * 2 + Duration::from_millis(1_000);
        Timing {
            block_time,
            leader_timeout,
            certification_timeout: leader_timeout + Duration::from_millis(1_000),
            timeout_retry: leader_timeout * 2,
        }
    }
}

/// Everything one validator needs besides its runtime and network.
#[derive(Clone)]
pub struct ValidatorConfig {
    /// From [`namespace`].
    pub namespace: Vec<u8>,
    /// The validator set (every validator's key).
    pub participants: Set<PublicKey>,
    /// This validator's key.
    pub key: PrivateKey,
    /// The genesis block.
    pub genesis: ChainBlock,
    /// Prefix of every storage partition (stable across restarts).
    pub partition_prefix: String,
    /// Limits of blocks from the network.
    pub block_codec: BlockCodec,
    /// Pacing and timeouts.
    pub timing: Timing,
}

/// One P2P channel's two ends.
pub type Channel<S, R> = (S, R);

/// The five channels a validator registers (see the `CHANNEL_*`
/// constants), on one network so they share their types.
pub struct Channels<S, R> {
    /// [`CHANNEL_VOTES`].
    pub votes: Channel<S, R>,
    /// [`CHANNEL_CERTIFICATES`].
    pub certificates: Channel<S, R>,
    /// [`CHANNEL_RESOLVER`].
    pub resolver: Channel<S, R>,
    /// [`CHANNEL_BACKFILL`].
    pub backfill: Channel<S, R>,
    /// [`CHANNEL_BLOCKS`].
    pub blocks: Channel<S, R>,
}

/// Why a validator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key is not one of the validators'.
    #[error("account {account} is not in the genesis validator set")]
    NotAValidator {
        /// The key's account.
        account: hypertensor_primitives::AccountId,
    },
    /// A storage archive would not open.
    #[error("cannot open the consensus store ({what}): {reason}")]
    Storage {
        /// Which archive.
        what: &'static str,
        /// The archive's error.
        reason: String,
    },
}

/// The running tasks of a validator.
pub struct Validator {
    /// simplex, marshal, the block broadcaster (each ends only on failure
    /// or shutdown).
    pub engines: Vec<Handle<()>>,
    /// The finalizer; its error says why finalization stopped.
    pub finalizer: Handle<Result<(), FinalizerError>>,
}

fn archive_config<C>(
    prefix: &str,
    name: &str,
    page_cache: &CacheRef,
    codec_config: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 1024,
        freezer_table_resize_frequency: 4,
        freezer_table_resize_chunk_size: 1024,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 64 * 1024 * 1024,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(4096),
        codec_config,
        replay_buffer: NZUsize!(1 << 20),
        freezer_key_write_buffer: NZUsize!(1 << 20),
        freezer_value_write_buffer: NZUsize!(1 << 20),
        ordinal_write_buffer: NZUsize!(1 << 20),
    }
}

/// Starts a validator: opens its consensus store under
/// `config.partition_prefix`, and runs simplex, marshal, block broadcast,
/// backfill and the finalizer on `context`.
pub async fn start_validator<E, S, R, P, B>(
    context: E,
    config: ValidatorConfig,
    host: Arc<dyn Host>,
    channels: Channels<S, R>,
    peers: P,
    blocker: B,
) -> Result<Validator, StartError>
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics + Sync,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    P: Provider<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey>,
{
    let me = config.key.public_key();
    let scheme = Scheme::signer(
        &config.namespace,
        config.participants.clone(),
        config.key.clone(),
    )
    .ok_or_else(|| StartError::NotAValidator {
        account: crate::app::account_of(&me),
    })?;
    let prefix = config.partition_prefix.clone();
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(1024));
    let speculative = Speculative::default();

    let (broadcaster, buffer) = buffered::Engine::<_, PublicKey, ChainBlock, _, _>::new(
        context.child("blocks"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size: NZUsize!(1024),
            deque_size: 16,
            priority: false,
            codec_config: config.block_codec,
            peer_provider: peers.clone(),
            strategy: Sequential,
        },
    );
    let resolver = backfill::init(
        context.child("backfill"),
        backfill::Config {
            public_key: me.clone(),
            peer_provider: peers.clone(),
            blocker: blocker.clone(),
            mailbox_size: NZUsize!(1024),
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );
    let finalizations = immutable::Archive::init(
        context.child("finalizations"),
        archive_config(
            &prefix,
            "finalizations",
            &page_cache,
            <Scheme as commonware_cryptography::certificate::Verifier>::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .map_err(|e| StartError::Storage {
        what: "finalizations",
        reason: e.to_string(),
    })?;
    let blocks = immutable::Archive::init(
        context.child("finalized_blocks"),
        archive_config(&prefix, "blocks", &page_cache, config.block_codec),
    )
    .await
    .map_err(|e| StartError::Storage {
        what: "blocks",
        reason: e.to_string(),
    })?;
    let epocher = FixedEpocher::new(NonZeroU64::MAX);
    let genesis_digest = config.genesis.digest();
    let (marshal, mailbox, _floor) = Marshal::<_, Standard<ChainBlock>, _, _, _, _, _>::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: ConstantProvider::new(scheme.clone()),
            epocher: epocher.clone(),
            start: Start::Genesis(Digested::precomputed(
                config.genesis.clone(),
                genesis_digest,
            )),
            partition_prefix: format!("{prefix}-marshal"),
            mailbox_size: NZUsize!(1024),
            view_retention: ViewDelta::new(1024),
            prunable_items_per_section: NZU64!(4096),
            page_cache: page_cache.clone(),
            replay_buffer: NZUsize!(1 << 20),
            key_write_buffer: NZUsize!(1 << 20),
            value_write_buffer: NZUsize!(1 << 20),
            block_codec_config: config.block_codec,
            max_repair: NZUsize!(32),
            max_pending_acks: NZUsize!(16),
            strategy: Sequential,
        },
    )
    .await;

    let app = ChainApp::new(
        Arc::clone(&host),
        speculative.clone(),
        config.timing.block_time,
    );
    let inline = Inline::new(context.child("inline"), app, mailbox, epocher);
    let reporter = Reporters::from((
        inline.clone(),
        EvidenceReporter::new(scheme.clone(), Arc::clone(&host)),
    ));
    let timing = config.timing;
    let engine = simplex::Engine::new(
        context.child("simplex"),
        simplex::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker,
            automaton: inline.clone(),
            relay: inline,
            reporter,
            strategy: Sequential,
            partition: format!("{prefix}-simplex"),
            mailbox_size: NZUsize!(1024),
            epoch: Epoch::zero(),
            floor: simplex::Floor::Genesis(genesis_digest),
            replay_buffer: NZUsize!(1 << 20),
            write_buffer: NZUsize!(1 << 20),
            page_cache,
            leader_timeout: timing.leader_timeout,
            certification_timeout: timing.certification_timeout,
            timeout_retry: timing.timeout_retry,
            view_retention: ViewDelta::new(256),
            skip: SkipPolicy::Enabled {
                timeout: timing.certification_timeout.max(timing.timeout_retry)
                    + Duration::from_secs(1),
                budget: SkipBudget::Participants,
            },
            fetch_timeout: NZDuration!(Duration::from_secs(1)),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::Disabled,
            track_historical_votes: false,
        },
    );

    let (finalized, queue) = FinalizedBlocks::new();
    let finalizer = context
        .child("finalizer")
        .spawn(move |_| run_finalizer(queue, host, speculative));
    let broadcaster = broadcaster.start(channels.blocks);
    let marshal = marshal.start(finalized, buffer, resolver);
    let simplex = engine.start(channels.votes, channels.certificates, channels.resolver);
    Ok(Validator {
        engines: vec![simplex, marshal, broadcaster],
        finalizer,
    })
}
