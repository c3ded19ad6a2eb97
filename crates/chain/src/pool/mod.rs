//! The transaction pool: admission, eviction, re-validation and block
//! building, as pure functions of the state they are given (no clock, no
//! I/O: the block height is the pool's only notion of time).
//!
//! * **Admission** ([`Pool::check`], then [`Pool::insert`]): the runtime's
//!   [`validate_extrinsic`](hypertensor_runtime::State::validate_extrinsic)
//!   against the best state (stateless call checks, nonce not used and at
//!   most `max_future_nonces` ahead, fee payable, signature with the
//!   extrinsic domain and this chain's genesis hash), then the pool's own
//!   rules:
//!   * a transfer to oneself is refused (it would only burn the fee);
//!   * the free balance covers the fee plus what the call moves out of it
//!     (transfer amount, stake, registration fee) **for all of the
//!     sender's pending extrinsics together**, so one balance cannot back
//!     more extrinsics than it can pay for;
//!   * no duplicate, one extrinsic per (signer, nonce);
//!   * at most [`PoolConfig::max_per_sender`] pending per sender, of which
//!     at most [`PoolConfig::max_future_per_sender`] "future" (behind a
//!     nonce gap, so not includable yet);
//!   * at most [`PoolConfig::capacity`] in all. When full, a **ready**
//!     extrinsic (one that pays its fee in the next block) evicts the
//!     oldest future one; a future one is refused. Fees are flat, so
//!     "pays a fee soon" is what ranks an extrinsic above another.
//! * **Re-validation** after every block ([`Pool::revalidate`]): drops what
//!   was included or made stale, what the sender can no longer pay for,
//!   and future extrinsics older than
//!   [`PoolConfig::future_lifetime_blocks`].
//! * **Block building** ([`Pool::build_block`]): round-robin over senders
//!   (every sender's first ready extrinsic, oldest first, before anyone's
//!   second), so an honest sender's one transfer waits behind at most one
//!   ready extrinsic per other sender that arrived before it, each of
//!   which pays a fee. One the runtime
//!   refuses (it became invalid) is dropped, and the builder's state is
//!   unchanged by it (the runtime never half-applies).
//!
//! Together: extrinsics that never pay (future nonces, unaffordable
//! chains) cannot hold a place an honest, paying transfer needs, and
//! cannot stay longer than their lifetime.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use hypertensor_primitives::{AccountId, Balance, H256};
use hypertensor_runtime::{BlockBuilder, BlockNumber, Call, Extrinsic, SignatureCheck, State};

#[cfg(test)]
mod tests;

/// The pool's limits (see the module docs and `docs/chain.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most extrinsics pending in all.
    pub capacity: usize,
    /// Most extrinsics pending from one sender (ready and future).
    pub max_per_sender: usize,
    /// Most future extrinsics (behind a nonce gap) from one sender.
    pub max_future_per_sender: usize,
    /// Blocks after which a future extrinsic still behind a gap is dropped.
    pub future_lifetime_blocks: BlockNumber,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            capacity: 65_536,
            max_per_sender: 64,
            max_future_per_sender: 16,
            future_lifetime_blocks: 64,
        }
    }
}

/// Why the pool refused an extrinsic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The runtime's validation failed (bad signature, nonce, fee, call
    /// arguments).
    #[error(transparent)]
    Invalid(#[from] hypertensor_runtime::Error),
    /// The free balance cannot pay fee plus what the call moves, together
    /// with the sender's other pending extrinsics.
    #[error(
        "insufficient balance: the call needs {needed} (fee and the sender's pending \
         extrinsics included), free balance is {free}"
    )]
    InsufficientBalance {
        /// Fee plus amount moved, base units, pending ones included.
        needed: Balance,
        /// Free balance.
        free: Balance,
    },
    /// A transfer whose recipient is its signer.
    #[error("a transfer to oneself ({0}) moves nothing and would only burn the fee; refused")]
    SelfTransfer(AccountId),
    /// This exact extrinsic is already pending.
    #[error("extrinsic {0} is already in the pool")]
    AlreadyInPool(H256),
    /// It was checked against a state older than the pool's (a block came
    /// in between): check it again against the new state.
    #[error("checked at block {checked}, but the pool is at block {pool}; check again")]
    Stale {
        /// The height it was checked at.
        checked: BlockNumber,
        /// The height of the pool's last re-check.
        pool: BlockNumber,
    },
    /// Another extrinsic with the same signer and nonce is pending.
    #[error("an extrinsic of {signer} with nonce {nonce} is already in the pool")]
    NonceInPool {
        /// Signer.
        signer: AccountId,
        /// Nonce.
        nonce: u64,
    },
    /// The sender has its maximum of pending extrinsics.
    #[error(
        "{signer} already has {max} extrinsics in the pool, the limit per sender; \
         wait for some to be included"
    )]
    SenderFull {
        /// Signer.
        signer: AccountId,
        /// The limit.
        max: usize,
    },
    /// The sender has its maximum of future extrinsics (behind a gap).
    #[error(
        "{signer} already has {max} extrinsics waiting behind a nonce gap (next expected \
         nonce {expected}); submit nonce {expected} first"
    )]
    TooManyFuture {
        /// Signer.
        signer: AccountId,
        /// The nonce that would fill the first gap.
        expected: u64,
        /// The limit.
        max: usize,
    },
    /// The pool holds its maximum and nothing can be evicted for this one.
    #[error("the transaction pool is full ({max} extrinsics); retry later")]
    Full {
        /// Capacity.
        max: usize,
    },
}

/// An extrinsic that passed [`Pool::check`] against some state.
#[derive(Debug)]
pub struct Checked {
    xt: Extrinsic,
    hash: H256,
    /// Fee plus what the call moves out of the free balance.
    cost: Balance,
    /// The signer's nonce and free balance in the checked state.
    account_nonce: u64,
    free: Balance,
    /// Height of the checked state.
    height: BlockNumber,
}

struct Entry {
    xt: Extrinsic,
    hash: H256,
    seq: u64,
    cost: Balance,
    admitted: BlockNumber,
    /// Whether it is indexed in [`Pool::future`].
    future: bool,
}

#[derive(Default)]
struct Sender {
    /// The account's nonce as last seen.
    base: u64,
    entries: BTreeMap<u64, Entry>,
}

impl Sender {
    /// The first nonce from `base` on without a pending extrinsic: entries
    /// below it are ready, entries above it wait behind a gap.
    fn ready_end(&self) -> u64 {
        let mut nonce = self.base;
        while self.entries.contains_key(&nonce) {
            nonce += 1;
        }
        nonce
    }

    fn future_count(&self) -> usize {
        self.entries.values().filter(|e| e.future).count()
    }

    fn pending_cost(&self) -> Balance {
        self.entries
            .values()
            .fold(0, |sum: Balance, e| sum.saturating_add(e.cost))
    }
}

/// What [`Pool::revalidate`] dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revalidated {
    /// Nonce used (included, or made stale by another extrinsic).
    pub used: usize,
    /// The sender can no longer pay for them.
    pub unaffordable: usize,
    /// Future extrinsics past their lifetime.
    pub expired: usize,
}

/// Pending extrinsics, validated at submission and after every block.
pub struct Pool {
    config: PoolConfig,
    senders: HashMap<AccountId, Sender>,
    hashes: HashSet<H256>,
    /// Future extrinsics by age: (arrival, signer, nonce).
    future: BTreeSet<(u64, AccountId, u64)>,
    next_seq: u64,
    /// The height of the state of the last [`Pool::revalidate`].
    height: BlockNumber,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("len", &self.len())
            .field("future", &self.future.len())
            .finish()
    }
}

/// What a call moves out of the signer's free balance (besides the fee).
fn call_cost(call: &Call, state: &State) -> Balance {
    match call {
        Call::Transfer { amount, .. } | Call::AddStake { amount, .. } => *amount,
        Call::RegisterSubnetNode { stake, .. } => *stake,
        Call::RegisterSubnet { .. } => state.params().subnet_registration_fee,
        _ => 0,
    }
}

impl Pool {
    /// An empty pool with the limits of `config`.
    pub fn new(config: PoolConfig) -> Pool {
        Pool {
            config,
            senders: HashMap::new(),
            hashes: HashSet::new(),
            future: BTreeSet::new(),
            next_seq: 0,
            height: 0,
        }
    }

    /// The pool's limits.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Pending extrinsics.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Pending extrinsics that wait behind a nonce gap.
    pub fn future_len(&self) -> usize {
        self.future.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The nonce `signer`'s next extrinsic should carry: after the best
    /// state's nonce and the consecutive pending ones.
    pub fn next_nonce(&self, state: &State, signer: &AccountId) -> u64 {
        let mut nonce = state.account(signer).nonce;
        if let Some(sender) = self.senders.get(signer) {
            while sender.entries.contains_key(&nonce) {
                nonce += 1;
            }
        }
        nonce
    }

    /// Whether the extrinsic `hash` is pooled (so its signature was
    /// verified against this chain at admission).
    pub fn contains(&self, hash: &H256) -> bool {
        self.hashes.contains(hash)
    }

    /// Validates `xt` against `state` and admits it. Returns its hash and
    /// whether it is ready for the next block.
    pub fn submit(&mut self, state: &State, xt: Extrinsic) -> Result<(H256, bool), PoolError> {
        let checked = Pool::check(state, xt)?;
        self.insert(checked)
    }

    /// The checks that need only the state, not the pool: the runtime's
    /// validation (signature included, the costly part), self transfers
    /// and the balance pre-check of this one extrinsic. Needs no
    /// `&mut self`, so a node runs it outside the pool's lock and only
    /// [`Pool::insert`] holds it.
    pub fn check(state: &State, xt: Extrinsic) -> Result<Checked, PoolError> {
        if let Call::Transfer { to, .. } = &xt.call
            && *to == xt.signer
        {
            return Err(PoolError::SelfTransfer(xt.signer));
        }
        let validity = state.validate_extrinsic(&xt)?;
        let free = state.account(&xt.signer).free;
        let cost = validity.fee.saturating_add(call_cost(&xt.call, state));
        if free < cost {
            return Err(PoolError::InsufficientBalance { needed: cost, free });
        }
        Ok(Checked {
            hash: xt.hash(),
            cost,
            account_nonce: validity.account_nonce,
            free,
            height: state.height(),
            xt,
        })
    }

    /// Admits an extrinsic that passed [`Pool::check`]: refuses duplicates,
    /// a second extrinsic for the same (signer, nonce), what the sender
    /// cannot pay for with its other pending ones, the per-sender limits,
    /// and overflow (after evicting the oldest future extrinsic for a
    /// ready one). Returns its hash and whether it is ready.
    pub fn insert(&mut self, checked: Checked) -> Result<(H256, bool), PoolError> {
        let Checked {
            xt,
            hash,
            cost,
            account_nonce,
            free,
            height,
        } = checked;
        if height < self.height {
            return Err(PoolError::Stale {
                checked: height,
                pool: self.height,
            });
        }
        if self.hashes.contains(&hash) {
            return Err(PoolError::AlreadyInPool(hash));
        }
        let signer = xt.signer;
        let nonce = xt.nonce;
        let ready = {
            let sender = self.senders.get(&signer);
            let base = sender.map_or(account_nonce, |s| s.base.max(account_nonce));
            if nonce < base {
                return Err(PoolError::Invalid(hypertensor_runtime::Error::StaleNonce {
                    expected: base,
                    got: nonce,
                }));
            }
            let (ready_end, count, futures, pending) = match sender {
                Some(s) => {
                    if s.entries.contains_key(&nonce) {
                        return Err(PoolError::NonceInPool { signer, nonce });
                    }
                    let mut end = base;
                    while s.entries.contains_key(&end) {
                        end += 1;
                    }
                    (end, s.entries.len(), s.future_count(), s.pending_cost())
                }
                None => (base, 0, 0, 0),
            };
            if count >= self.config.max_per_sender {
                return Err(PoolError::SenderFull {
                    signer,
                    max: self.config.max_per_sender,
                });
            }
            let needed = pending.saturating_add(cost);
            if needed > free {
                return Err(PoolError::InsufficientBalance { needed, free });
            }
            let ready = nonce == ready_end;
            if !ready && futures >= self.config.max_future_per_sender {
                return Err(PoolError::TooManyFuture {
                    signer,
                    expected: ready_end,
                    max: self.config.max_future_per_sender,
                });
            }
            ready
        };
        if self.hashes.len() >= self.config.capacity {
            // A ready extrinsic pays its fee in the next blocks: it takes
            // the place of the oldest one that cannot.
            let victim = if ready {
                self.future.iter().next().copied()
            } else {
                None
            };
            let Some((_, victim_signer, victim_nonce)) = victim else {
                return Err(PoolError::Full {
                    max: self.config.capacity,
                });
            };
            tracing::debug!(%victim_signer, victim_nonce, "evicting the oldest future extrinsic");
            self.remove(&victim_signer, victim_nonce);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let sender = self.senders.entry(signer).or_default();
        sender.base = sender.base.max(account_nonce);
        sender.entries.insert(
            nonce,
            Entry {
                xt,
                hash,
                seq,
                cost,
                admitted: height,
                future: false,
            },
        );
        self.hashes.insert(hash);
        self.reindex(&signer);
        Ok((hash, ready))
    }

    /// Recomputes which of `signer`'s extrinsics wait behind a gap.
    fn reindex(&mut self, signer: &AccountId) {
        let Some(sender) = self.senders.get_mut(signer) else {
            return;
        };
        let end = sender.ready_end();
        for (nonce, entry) in sender.entries.iter_mut() {
            let future = *nonce > end;
            if future != entry.future {
                if future {
                    self.future.insert((entry.seq, *signer, *nonce));
                } else {
                    self.future.remove(&(entry.seq, *signer, *nonce));
                }
                entry.future = future;
            }
        }
    }

    /// Pushes ready extrinsics into `builder` round-robin over senders
    /// (each sender's first, oldest sender first, then each one's second,
    /// ...) until the block is full or nothing is ready. Extrinsics the
    /// runtime refuses are removed from the pool. Returns how many were
    /// dropped.
    pub fn build_block(&mut self, builder: &mut BlockBuilder) -> usize {
        let max = builder.state().params().max_block_extrinsics as usize;
        // Candidates: (depth in the sender's queue, arrival, signer, nonce).
        let mut heap = BinaryHeap::new();
        for (signer, sender) in &self.senders {
            let nonce = builder.state().account(signer).nonce;
            if let Some(entry) = sender.entries.get(&nonce) {
                heap.push(std::cmp::Reverse((0u64, entry.seq, *signer, nonce)));
            }
        }
        let mut dropped = Vec::new();
        while let Some(std::cmp::Reverse((depth, _, signer, nonce))) = heap.pop() {
            if builder.extrinsics().len() >= max {
                break;
            }
            let Some(entry) = self
                .senders
                .get(&signer)
                .and_then(|s| s.entries.get(&nonce))
            else {
                continue;
            };
            // Signatures were verified at submission against this chain.
            match builder.push_with(entry.xt.clone(), SignatureCheck::AlreadyVerified) {
                Ok(_) => {
                    if let Some(next) = self
                        .senders
                        .get(&signer)
                        .and_then(|s| s.entries.get(&(nonce + 1)))
                    {
                        heap.push(std::cmp::Reverse((depth + 1, next.seq, signer, nonce + 1)));
                    }
                }
                Err(hypertensor_runtime::Error::BlockFull { .. }) => break,
                Err(error) => {
                    tracing::debug!(%signer, nonce, %error, "dropping extrinsic that became invalid");
                    dropped.push((signer, nonce));
                }
            }
        }
        for (signer, nonce) in &dropped {
            self.remove(signer, *nonce);
            self.reindex(signer);
        }
        dropped.len()
    }

    /// Re-checks everything pending against `state` (the new best state,
    /// after a block): drops extrinsics whose nonce is used, those the
    /// sender can no longer pay for (in nonce order, with the ones before
    /// them), and future ones admitted `future_lifetime_blocks` or more
    /// blocks before `state`'s height.
    pub fn revalidate(&mut self, state: &State) -> Revalidated {
        let height = state.height();
        self.height = self.height.max(height);
        let lifetime = self.config.future_lifetime_blocks;
        let mut report = Revalidated::default();
        let mut drop_list = Vec::new();
        let signers: Vec<AccountId> = self.senders.keys().copied().collect();
        for signer in signers {
            let account = state.account(&signer);
            if let Some(sender) = self.senders.get_mut(&signer) {
                sender.base = sender.base.max(account.nonce);
                let mut spent: Balance = 0;
                for (nonce, entry) in &sender.entries {
                    if *nonce < account.nonce {
                        report.used += 1;
                        drop_list.push(*nonce);
                        continue;
                    }
                    let after = spent.saturating_add(entry.cost);
                    if after > account.free {
                        report.unaffordable += 1;
                        drop_list.push(*nonce);
                        continue;
                    }
                    spent = after;
                }
            }
            for nonce in drop_list.drain(..) {
                self.remove(&signer, nonce);
            }
            self.reindex(&signer);
            if let Some(sender) = self.senders.get(&signer) {
                drop_list.extend(
                    sender
                        .entries
                        .iter()
                        .filter(|(_, e)| e.future && height >= e.admitted.saturating_add(lifetime))
                        .map(|(n, _)| *n),
                );
            }
            report.expired += drop_list.len();
            for nonce in drop_list.drain(..) {
                self.remove(&signer, nonce);
            }
        }
        report
    }

    /// Removes one extrinsic (and its sender once empty). The caller
    /// re-indexes the sender if others of it remain.
    fn remove(&mut self, signer: &AccountId, nonce: u64) {
        if let Some(sender) = self.senders.get_mut(signer) {
            if let Some(entry) = sender.entries.remove(&nonce) {
                self.hashes.remove(&entry.hash);
                if entry.future {
                    self.future.remove(&(entry.seq, *signer, nonce));
                }
            }
            if sender.entries.is_empty() {
                self.senders.remove(signer);
            }
        }
    }
}
