//! Record validators, run in the order of SPEC §4 on every entry a peer
//! asks us to store:
//!
//! 1. signature and subkey ownership ([`SignedEntry::verify`]);
//! 2. schema: a registered key prefix, the value's type and size limit;
//! 3. expiration: not already passed and not beyond the key's max TTL;
//! 4. phase: the key's window in the chain's epoch ([`PhaseClock`]);
//! 5. per-writer, per-epoch write limit;
//! 6. proof of stake ([`StakeOracle`]).
//!
//! Entries read back from other peers (query results) go through 1-3 and 6:
//! the phase and write-limit rules are about *when* a write happened, and a
//! record legitimately written in its window is still valid afterwards.
//! Every rejection is counted by reason in [`Metrics`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hypertensor_primitives::H256;
use libp2p::PeerId;

pub use crate::metrics::Metrics;
use crate::record::{SignatureFault, SignedEntry};
use crate::schema::SchemaRegistry;

/// Why an entry was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The signature does not verify under the subkey's key: forged, or
    /// signed by someone other than the subkey's owner.
    BadSignature,
    /// The subkey is not an Ed25519 peer id, so no writer can own it.
    NotOwnable,
    /// No schema is registered for the key.
    UnknownKey(String),
    /// The value does not decode as the key's type.
    BadValue(String),
    /// The value is larger than the key's limit.
    Oversized {
        /// Value size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The expiration has already passed.
    Expired,
    /// The expiration is further in the future than the key allows.
    TtlTooLong {
        /// Requested time to live, in ms.
        ttl_ms: u64,
        /// The key's maximum, in ms.
        max_ms: u64,
    },
    /// The key may not be written at this point of the epoch.
    OutOfPhase,
    /// The writer has used up its writes for this epoch.
    WriteLimit {
        /// The per-epoch limit.
        limit: u32,
    },
    /// The writer is not a staked node of this subnet.
    NotStaked,
}

/// The kinds of [`RejectReason`], for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectKind {
    /// See [`RejectReason::BadSignature`].
    BadSignature,
    /// See [`RejectReason::NotOwnable`].
    NotOwnable,
    /// See [`RejectReason::UnknownKey`].
    UnknownKey,
    /// See [`RejectReason::BadValue`].
    BadValue,
    /// See [`RejectReason::Oversized`].
    Oversized,
    /// See [`RejectReason::Expired`].
    Expired,
    /// See [`RejectReason::TtlTooLong`].
    TtlTooLong,
    /// See [`RejectReason::OutOfPhase`].
    OutOfPhase,
    /// See [`RejectReason::WriteLimit`].
    WriteLimit,
    /// See [`RejectReason::NotStaked`].
    NotStaked,
}

impl RejectKind {
    /// Every kind, in counter order.
    pub const ALL: [RejectKind; 10] = [
        RejectKind::BadSignature,
        RejectKind::NotOwnable,
        RejectKind::UnknownKey,
        RejectKind::BadValue,
        RejectKind::Oversized,
        RejectKind::Expired,
        RejectKind::TtlTooLong,
        RejectKind::OutOfPhase,
        RejectKind::WriteLimit,
        RejectKind::NotStaked,
    ];
}

impl RejectReason {
    /// The counter this reason increments.
    pub fn kind(&self) -> RejectKind {
        match self {
            RejectReason::BadSignature => RejectKind::BadSignature,
            RejectReason::NotOwnable => RejectKind::NotOwnable,
            RejectReason::UnknownKey(_) => RejectKind::UnknownKey,
            RejectReason::BadValue(_) => RejectKind::BadValue,
            RejectReason::Oversized { .. } => RejectKind::Oversized,
            RejectReason::Expired => RejectKind::Expired,
            RejectReason::TtlTooLong { .. } => RejectKind::TtlTooLong,
            RejectReason::OutOfPhase => RejectKind::OutOfPhase,
            RejectReason::WriteLimit { .. } => RejectKind::WriteLimit,
            RejectReason::NotStaked => RejectKind::NotStaked,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::BadSignature => {
                f.write_str("signature does not verify under the subkey's key")
            }
            RejectReason::NotOwnable => f.write_str("subkey is not an Ed25519 peer id"),
            RejectReason::UnknownKey(k) => write!(f, "no schema registered for key {k:?}"),
            RejectReason::BadValue(why) => write!(f, "value does not match the key's type: {why}"),
            RejectReason::Oversized { size, limit } => {
                write!(
                    f,
                    "value of {size} bytes exceeds the key's limit of {limit}"
                )
            }
            RejectReason::Expired => f.write_str("expiration has passed"),
            RejectReason::TtlTooLong { ttl_ms, max_ms } => {
                write!(
                    f,
                    "time to live {ttl_ms} ms exceeds the key's maximum {max_ms} ms"
                )
            }
            RejectReason::OutOfPhase => {
                f.write_str("key may not be written now (outside its window)")
            }
            RejectReason::WriteLimit { limit } => {
                write!(f, "writer exceeded its limit of {limit} writes this epoch")
            }
            RejectReason::NotStaked => f.write_str("writer is not a staked node of this subnet"),
        }
    }
}

/// The chain's view of time that the consensus layer provides: the current
/// epoch and whether a key may be written now (SPEC §6 windows).
pub trait PhaseClock: Send + Sync + 'static {
    /// The current epoch (write limits are counted per epoch).
    fn epoch(&self) -> u64;
    /// Whether `key` may be written at the current point of the epoch.
    fn may_write(&self, key: &str) -> bool;
}

/// A phase clock with no windows: every key is writable, and epochs are
/// fixed slices of wall-clock time. For DHTs that serve no consensus keys
/// (and for tests of the other validators).
#[derive(Clone, Debug)]
pub struct WallClockEpochs {
    /// Length of one epoch.
    pub epoch_length: Duration,
}

impl PhaseClock for WallClockEpochs {
    fn epoch(&self) -> u64 {
        let ms = u64::try_from(self.epoch_length.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        crate::record::now_ms() / ms
    }
    fn may_write(&self, _key: &str) -> bool {
        true
    }
}

/// Answers whether a peer is a staked node of this subnet.
pub trait StakeOracle: Send + Sync + 'static {
    /// Whether `peer` passes proof of stake now.
    fn is_staked(&self, peer: PeerId) -> BoxFuture<'_, bool>;
}

/// The chain query behind a [`CachingStakeOracle`] (the chain client's
/// `proof_of_stake(subnet, peer_id, min_class)` call plugs in here).
pub trait StakeLookup: Send + Sync + 'static {
    /// Asks the chain; an error means the chain could not be asked.
    fn lookup(&self, peer: PeerId) -> BoxFuture<'_, std::result::Result<bool, String>>;
}

/// A fixed set of staked peers (a devnet roster, or a test's chain stand-in).
#[derive(Clone, Debug, Default)]
pub struct StakeSet(pub std::collections::HashSet<PeerId>);

impl StakeLookup for StakeSet {
    fn lookup(&self, peer: PeerId) -> BoxFuture<'_, std::result::Result<bool, String>> {
        let staked = self.0.contains(&peer);
        Box::pin(async move { Ok(staked) })
    }
}

/// Most answers kept by a [`CachingStakeOracle`] before expired ones are
/// pruned.
const STAKE_CACHE_PRUNE_AT: usize = 16_384;

/// A [`StakeOracle`] that caches a [`StakeLookup`]'s answers: "yes" for
/// `yes_ttl` (default 300 s), "no" for `no_ttl` (default 20 s). A lookup
/// that fails counts as "no" and is cached as one, so an unreachable chain
/// is not hammered and no unverified peer is admitted.
pub struct CachingStakeOracle<L> {
    lookup: L,
    yes_ttl: Duration,
    no_ttl: Duration,
    cache: Mutex<HashMap<PeerId, (bool, Instant)>>,
    lookups: AtomicU64,
}

impl<L: StakeLookup> CachingStakeOracle<L> {
    /// The oracle with SPEC §4's cache times.
    pub fn new(lookup: L) -> Self {
        Self::with_ttls(lookup, Duration::from_secs(300), Duration::from_secs(20))
    }

    /// The oracle with chosen cache times.
    pub fn with_ttls(lookup: L, yes_ttl: Duration, no_ttl: Duration) -> Self {
        CachingStakeOracle {
            lookup,
            yes_ttl,
            no_ttl,
            cache: Mutex::new(HashMap::new()),
            lookups: AtomicU64::new(0),
        }
    }

    /// How many times the underlying lookup was asked.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    fn cached(&self, peer: &PeerId, now: Instant) -> Option<bool> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(peer)
            .filter(|(_, until)| *until > now)
            .map(|(staked, _)| *staked)
    }
}

impl<L: StakeLookup> StakeOracle for CachingStakeOracle<L> {
    fn is_staked(&self, peer: PeerId) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            if let Some(staked) = self.cached(&peer, Instant::now()) {
                return staked;
            }
            self.lookups.fetch_add(1, Ordering::Relaxed);
            let staked = match self.lookup.lookup(peer).await {
                Ok(staked) => staked,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "proof-of-stake lookup failed; treating as unstaked");
                    false
                }
            };
            let now = Instant::now();
            let ttl = if staked { self.yes_ttl } else { self.no_ttl };
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= STAKE_CACHE_PRUNE_AT {
                cache.retain(|_, (_, until)| *until > now);
            }
            cache.insert(peer, (staked, now + ttl));
            staked
        })
    }
}

/// Counts writes per (writer, epoch) and refuses those over the limit.
#[derive(Debug)]
struct WriteLimiter {
    limit: u32,
    epoch: u64,
    counts: HashMap<PeerId, u32>,
}

impl WriteLimiter {
    /// Counts a write; `Err(limit)` when the writer is over it.
    fn admit(&mut self, writer: PeerId, epoch: u64) -> std::result::Result<(), u32> {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.counts.clear();
        }
        let count = self.counts.entry(writer).or_insert(0);
        if *count >= self.limit {
            return Err(self.limit);
        }
        *count += 1;
        Ok(())
    }
}

/// The validator chain with its shared state.
pub struct Validator {
    genesis: H256,
    schemas: SchemaRegistry,
    phase: std::sync::Arc<dyn PhaseClock>,
    stake: std::sync::Arc<dyn StakeOracle>,
    limiter: Mutex<WriteLimiter>,
    metrics: std::sync::Arc<Metrics>,
}

impl Validator {
    /// A validator chain; `writes_per_epoch` is the per-writer limit.
    pub fn new(
        genesis: H256,
        schemas: SchemaRegistry,
        phase: std::sync::Arc<dyn PhaseClock>,
        stake: std::sync::Arc<dyn StakeOracle>,
        writes_per_epoch: u32,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Validator {
            genesis,
            schemas,
            phase,
            stake,
            limiter: Mutex::new(WriteLimiter {
                limit: writes_per_epoch,
                epoch: 0,
                counts: HashMap::new(),
            }),
            metrics,
        }
    }

    /// The schemas in force.
    pub fn schemas(&self) -> &SchemaRegistry {
        &self.schemas
    }

    /// The network's genesis hash (signing domain).
    pub fn genesis(&self) -> &H256 {
        &self.genesis
    }

    /// Checks 1-3: signature and ownership, schema, expiration and TTL.
    fn check_static(
        &self,
        key: &str,
        entry: &SignedEntry,
        now_ms: u64,
    ) -> std::result::Result<(), RejectReason> {
        entry.verify(&self.genesis, key).map_err(|f| match f {
            SignatureFault::BadSignature => RejectReason::BadSignature,
            SignatureFault::NotOwnable => RejectReason::NotOwnable,
        })?;
        let schema = self
            .schemas
            .lookup(key)
            .ok_or_else(|| RejectReason::UnknownKey(key.chars().take(64).collect()))?;
        if entry.value.len() > schema.max_value_bytes {
            return Err(RejectReason::Oversized {
                size: entry.value.len(),
                limit: schema.max_value_bytes,
            });
        }
        (schema.check)(&entry.value).map_err(RejectReason::BadValue)?;
        if entry.expiration <= now_ms {
            return Err(RejectReason::Expired);
        }
        let ttl_ms = entry.expiration - now_ms;
        let max_ms = u64::try_from(schema.max_ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms > max_ms {
            return Err(RejectReason::TtlTooLong { ttl_ms, max_ms });
        }
        Ok(())
    }

    fn count<T>(
        &self,
        r: std::result::Result<T, RejectReason>,
    ) -> std::result::Result<T, RejectReason> {
        if let Err(reason) = &r {
            self.metrics.reject(reason.kind());
        }
        r
    }

    /// Runs the whole chain (1-6) on an entry someone asks us to store.
    /// Cancel-safe: dropping the future only skips the stake check.
    pub async fn validate_write(
        &self,
        key: &str,
        entry: &SignedEntry,
        now_ms: u64,
    ) -> std::result::Result<(), RejectReason> {
        let r = async {
            self.check_static(key, entry, now_ms)?;
            if !self.phase.may_write(key) {
                return Err(RejectReason::OutOfPhase);
            }
            let epoch = self.phase.epoch();
            let admitted = {
                let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
                limiter
                    .admit(entry.subkey, epoch)
                    .map_err(|limit| RejectReason::WriteLimit { limit })
            };
            admitted?;
            if !self.stake.is_staked(entry.subkey).await {
                return Err(RejectReason::NotStaked);
            }
            Ok(())
        }
        .await;
        self.count(r)
    }

    /// Runs checks 1-3 and 6 on an entry read from another peer.
    pub async fn validate_read(
        &self,
        key: &str,
        entry: &SignedEntry,
        now_ms: u64,
    ) -> std::result::Result<(), RejectReason> {
        let r = async {
            self.check_static(key, entry, now_ms)?;
            if !self.stake.is_staked(entry.subkey).await {
                return Err(RejectReason::NotStaked);
            }
            Ok(())
        }
        .await;
        self.count(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::KeySchema;
    use hypertensor_primitives::Keypair;
    use std::sync::Arc;

    struct Window(bool);
    impl PhaseClock for Window {
        fn epoch(&self) -> u64 {
            7
        }
        fn may_write(&self, _key: &str) -> bool {
            self.0
        }
    }

    fn validator(open: bool, staked: &[&Keypair]) -> (Validator, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let set = StakeSet(
            staked
                .iter()
                .map(|k| crate::record::peer_id_of(k))
                .collect(),
        );
        let schemas = SchemaRegistry::new().register(KeySchema::typed(
            "n/",
            "u32",
            4,
            Duration::from_secs(60),
            |v| {
                if v.len() == 4 {
                    Ok(())
                } else {
                    Err(format!("{} bytes, want 4", v.len()))
                }
            },
        ));
        let v = Validator::new(
            H256::ZERO,
            schemas,
            Arc::new(Window(open)),
            Arc::new(CachingStakeOracle::new(set)),
            2,
            metrics.clone(),
        );
        (v, metrics)
    }

    #[tokio::test]
    async fn each_validator_rejects_and_counts_in_order() {
        let alice = Keypair::dev("alice");
        let bob = Keypair::dev("bob");
        let (v, m) = validator(true, &[&alice]);
        let now = 1_000_000;
        let ok = SignedEntry::sign(&alice, &H256::ZERO, "n/1", vec![0; 4], now + 1000);
        assert_eq!(v.validate_write("n/1", &ok, now).await, Ok(()));

        let mut forged = ok.clone();
        forged.value = vec![1; 4];
        assert_eq!(
            v.validate_write("n/1", &forged, now).await,
            Err(RejectReason::BadSignature)
        );
        let mut not_owner = SignedEntry::sign(&bob, &H256::ZERO, "n/1", vec![0; 4], now + 1000);
        not_owner.subkey = ok.subkey;
        assert_eq!(
            v.validate_write("n/1", &not_owner, now).await,
            Err(RejectReason::BadSignature)
        );
        let unknown = SignedEntry::sign(&alice, &H256::ZERO, "x", vec![0; 4], now + 1000);
        assert!(matches!(
            v.validate_write("x", &unknown, now).await,
            Err(RejectReason::UnknownKey(_))
        ));
        let big = SignedEntry::sign(&alice, &H256::ZERO, "n/1", vec![0; 5], now + 1000);
        assert!(matches!(
            v.validate_write("n/1", &big, now).await,
            Err(RejectReason::Oversized { size: 5, limit: 4 })
        ));
        let wrong_type = SignedEntry::sign(&alice, &H256::ZERO, "n/1", vec![0; 3], now + 1000);
        assert!(matches!(
            v.validate_write("n/1", &wrong_type, now).await,
            Err(RejectReason::BadValue(_))
        ));
        let expired = SignedEntry::sign(&alice, &H256::ZERO, "n/1", vec![0; 4], now);
        assert_eq!(
            v.validate_write("n/1", &expired, now).await,
            Err(RejectReason::Expired)
        );
        let long = SignedEntry::sign(&alice, &H256::ZERO, "n/1", vec![0; 4], now + 60_001);
        assert!(matches!(
            v.validate_write("n/1", &long, now).await,
            Err(RejectReason::TtlTooLong { .. })
        ));
        // Second write of alice is admitted, the third is over the limit of 2.
        assert_eq!(
            v.validate_write(
                "n/2",
                &SignedEntry::sign(&alice, &H256::ZERO, "n/2", vec![0; 4], now + 5),
                now
            )
            .await,
            Ok(())
        );
        assert_eq!(
            v.validate_write(
                "n/3",
                &SignedEntry::sign(&alice, &H256::ZERO, "n/3", vec![0; 4], now + 5),
                now
            )
            .await,
            Err(RejectReason::WriteLimit { limit: 2 })
        );
        let unstaked = SignedEntry::sign(&bob, &H256::ZERO, "n/1", vec![0; 4], now + 5);
        assert_eq!(
            v.validate_write("n/1", &unstaked, now).await,
            Err(RejectReason::NotStaked)
        );
        for (kind, n) in [
            (RejectKind::BadSignature, 2),
            (RejectKind::UnknownKey, 1),
            (RejectKind::Oversized, 1),
            (RejectKind::BadValue, 1),
            (RejectKind::Expired, 1),
            (RejectKind::TtlTooLong, 1),
            (RejectKind::WriteLimit, 1),
            (RejectKind::NotStaked, 1),
        ] {
            assert_eq!(m.rejected(kind), n, "{kind:?}");
        }

        let (closed, m) = validator(false, &[&alice]);
        assert_eq!(
            closed.validate_write("n/1", &ok, now).await,
            Err(RejectReason::OutOfPhase)
        );
        assert_eq!(m.rejected(RejectKind::OutOfPhase), 1);
        // Reads ignore the window.
        assert_eq!(closed.validate_read("n/1", &ok, now).await, Ok(()));
    }

    /// A phase clock whose epoch the test moves.
    struct Epochs(std::sync::atomic::AtomicU64);
    impl PhaseClock for Epochs {
        fn epoch(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
        fn may_write(&self, _key: &str) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn write_limits_reset_each_epoch() {
        let alice = Keypair::dev("alice");
        let bob = Keypair::dev("bob");
        let clock = Arc::new(Epochs(AtomicU64::new(5)));
        let set = StakeSet(
            [&alice, &bob]
                .iter()
                .map(|k| crate::record::peer_id_of(k))
                .collect(),
        );
        let v = Validator::new(
            H256::ZERO,
            SchemaRegistry::new().register(KeySchema::bytes("n/", 4, Duration::from_secs(60))),
            clock.clone(),
            Arc::new(CachingStakeOracle::new(set)),
            1,
            Arc::new(Metrics::default()),
        );
        let now = 1_000_000;
        let e = |k: &Keypair, exp| SignedEntry::sign(k, &H256::ZERO, "n/1", vec![0; 4], exp);
        assert_eq!(
            v.validate_write("n/1", &e(&alice, now + 1), now).await,
            Ok(())
        );
        assert_eq!(
            v.validate_write("n/1", &e(&alice, now + 2), now).await,
            Err(RejectReason::WriteLimit { limit: 1 })
        );
        assert_eq!(
            v.validate_write("n/1", &e(&bob, now + 1), now).await,
            Ok(()),
            "per writer"
        );
        clock.0.store(6, Ordering::Relaxed);
        assert_eq!(
            v.validate_write("n/1", &e(&alice, now + 3), now).await,
            Ok(()),
            "new epoch"
        );
    }

    #[tokio::test]
    async fn stake_answers_are_cached() {
        let alice = crate::record::peer_id_of(&Keypair::dev("alice"));
        let bob = crate::record::peer_id_of(&Keypair::dev("bob"));
        let oracle = CachingStakeOracle::with_ttls(
            StakeSet([alice].into_iter().collect()),
            Duration::from_secs(300),
            Duration::from_millis(50),
        );
        assert!(oracle.is_staked(alice).await);
        assert!(oracle.is_staked(alice).await);
        assert!(!oracle.is_staked(bob).await);
        assert!(!oracle.is_staked(bob).await);
        assert_eq!(oracle.lookups(), 2);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!oracle.is_staked(bob).await);
        assert!(oracle.is_staked(alice).await);
        assert_eq!(oracle.lookups(), 3, "only the expired 'no' is asked again");
    }
}
