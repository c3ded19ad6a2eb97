//! The transaction pool.
//!
//! * **Admission** ([`Pool::submit`]): the runtime's
//!   [`validate_extrinsic`](hypertensor_runtime::State::validate_extrinsic)
//!   against the best state (stateless call checks, nonce not used and at
//!   most `max_future_nonces` ahead, fee payable, signature with the
//!   extrinsic domain and this chain's genesis hash), then the pool's own
//!   rules: no duplicate, one extrinsic per (signer, nonce), the free
//!   balance covers the fee plus what the call moves out of it (transfer
//!   amount, stake, registration fee), and a bounded size.
//! * **Order**: per signer by nonce; signers in order of arrival of their
//!   oldest extrinsic. Extrinsics whose nonce is ahead of the account's wait
//!   ("future") until the gap is filled.
//! * **Block building** ([`Pool::build_block`]): pushes ready extrinsics into
//!   a [`BlockBuilder`]; one the runtime refuses (it became invalid, for
//!   example the fee can no longer be paid) is dropped, and the builder's
//!   state is unchanged by it (the runtime never half-applies). After a
//!   block, [`Pool::prune`] drops extrinsics whose nonce is used.
//!
//! The balance pre-check sees the best state only: an extrinsic that would
//! become affordable through another pending extrinsic is refused; submit
//! it after that one is included.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use hypertensor_primitives::{AccountId, Balance, H256};
use hypertensor_runtime::{BlockBuilder, Call, Extrinsic, SignatureCheck, State};

/// Why the pool refused an extrinsic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The runtime's validation failed (bad signature, nonce, fee, call
    /// arguments).
    #[error(transparent)]
    Invalid(#[from] hypertensor_runtime::Error),
    /// The free balance cannot pay fee plus what the call moves.
    #[error("insufficient balance: the call needs {needed} (fee included), free balance is {free}")]
    InsufficientBalance {
        /// Fee plus amount moved, base units.
        needed: Balance,
        /// Free balance.
        free: Balance,
    },
    /// This exact extrinsic is already pending.
    #[error("extrinsic {0} is already in the pool")]
    AlreadyInPool(H256),
    /// Another extrinsic with the same signer and nonce is pending.
    #[error("an extrinsic of {signer} with nonce {nonce} is already in the pool")]
    NonceInPool {
        /// Signer.
        signer: AccountId,
        /// Nonce.
        nonce: u64,
    },
    /// The pool holds its maximum.
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
    ready: bool,
}

struct Entry {
    xt: Extrinsic,
    hash: H256,
    seq: u64,
}

/// Pending extrinsics, validated at submission.
pub struct Pool {
    by_signer: HashMap<AccountId, BTreeMap<u64, Entry>>,
    hashes: HashSet<H256>,
    capacity: usize,
    next_seq: u64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("len", &self.len()).finish()
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
    /// An empty pool holding at most `capacity` extrinsics.
    pub fn new(capacity: usize) -> Pool {
        Pool {
            by_signer: HashMap::new(),
            hashes: HashSet::new(),
            capacity,
            next_seq: 0,
        }
    }

    /// Pending extrinsics.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The nonce `signer`'s next extrinsic should carry: after the best
    /// state's nonce and the consecutive pending ones.
    pub fn next_nonce(&self, state: &State, signer: &AccountId) -> u64 {
        let mut nonce = state.account(signer).nonce;
        if let Some(entries) = self.by_signer.get(signer) {
            while entries.contains_key(&nonce) {
                nonce += 1;
            }
        }
        nonce
    }

    /// Validates `xt` against `state` and admits it. Returns its hash and
    /// whether it is ready for the next block.
    pub fn submit(&mut self, state: &State, xt: Extrinsic) -> Result<(H256, bool), PoolError> {
        let checked = Pool::check(state, xt)?;
        self.insert(checked)
    }

    /// The checks that need only the state, not the pool: the runtime's
    /// validation (signature included, the costly part) and the balance
    /// pre-check. Needs no `&mut self`, so a node runs it outside the pool's
    /// lock and only [`Pool::insert`] holds it.
    pub fn check(state: &State, xt: Extrinsic) -> Result<Checked, PoolError> {
        let validity = state.validate_extrinsic(&xt)?;
        let free = state.account(&xt.signer).free;
        let needed = validity.fee.saturating_add(call_cost(&xt.call, state));
        if free < needed {
            return Err(PoolError::InsufficientBalance { needed, free });
        }
        Ok(Checked {
            hash: xt.hash(),
            ready: validity.ready,
            xt,
        })
    }

    /// Admits an extrinsic that passed [`Pool::check`]: refuses duplicates,
    /// a second extrinsic for the same (signer, nonce), and overflow.
    pub fn insert(&mut self, checked: Checked) -> Result<(H256, bool), PoolError> {
        let Checked { xt, hash, ready } = checked;
        if self.hashes.contains(&hash) {
            return Err(PoolError::AlreadyInPool(hash));
        }
        let entries = self.by_signer.entry(xt.signer).or_default();
        if entries.contains_key(&xt.nonce) {
            return Err(PoolError::NonceInPool {
                signer: xt.signer,
                nonce: xt.nonce,
            });
        }
        if self.hashes.len() >= self.capacity {
            return Err(PoolError::Full { max: self.capacity });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        entries.insert(xt.nonce, Entry { xt, hash, seq });
        self.hashes.insert(hash);
        Ok((hash, ready))
    }

    /// Pushes ready extrinsics into `builder` in pool order until the block
    /// is full or nothing is ready. Extrinsics the runtime refuses are
    /// removed from the pool. Returns how many were dropped.
    pub fn build_block(&mut self, builder: &mut BlockBuilder) -> usize {
        let max = builder.state().params().max_block_extrinsics as usize;
        // Heap of (oldest first) candidates: each signer's next nonce.
        let mut heap = BinaryHeap::new();
        for (signer, entries) in &self.by_signer {
            let nonce = builder.state().account(signer).nonce;
            if let Some(entry) = entries.get(&nonce) {
                heap.push(std::cmp::Reverse((entry.seq, *signer, nonce)));
            }
        }
        let mut dropped = Vec::new();
        while let Some(std::cmp::Reverse((_, signer, nonce))) = heap.pop() {
            if builder.extrinsics().len() >= max {
                break;
            }
            let Some(entry) = self.by_signer.get(&signer).and_then(|e| e.get(&nonce)) else {
                continue;
            };
            // Signatures were verified at submission against this chain.
            match builder.push_with(entry.xt.clone(), SignatureCheck::AlreadyVerified) {
                Ok(_) => {
                    if let Some(next) = self
                        .by_signer
                        .get(&signer)
                        .and_then(|e| e.get(&(nonce + 1)))
                    {
                        heap.push(std::cmp::Reverse((next.seq, signer, nonce + 1)));
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
        }
        dropped.len()
    }

    /// Drops extrinsics whose nonce `state` has used (included, or made
    /// stale).
    pub fn prune(&mut self, state: &State) {
        let mut emptied = Vec::new();
        for (signer, entries) in &mut self.by_signer {
            let nonce = state.account(signer).nonce;
            let keep = entries.split_off(&nonce);
            for entry in entries.values() {
                self.hashes.remove(&entry.hash);
            }
            *entries = keep;
            if entries.is_empty() {
                emptied.push(*signer);
            }
        }
        for signer in emptied {
            self.by_signer.remove(&signer);
        }
    }

    fn remove(&mut self, signer: &AccountId, nonce: u64) {
        if let Some(entries) = self.by_signer.get_mut(signer) {
            if let Some(entry) = entries.remove(&nonce) {
                self.hashes.remove(&entry.hash);
            }
            if entries.is_empty() {
                self.by_signer.remove(signer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hypertensor_primitives::{Keypair, TENSOR};
    use hypertensor_runtime::GenesisConfig;

    use super::*;

    fn transfer(key: &Keypair, nonce: u64, amount: Balance, state: &State) -> Extrinsic {
        let to = Keypair::dev("ferdie").account_id();
        Extrinsic::sign(
            key,
            nonce,
            Call::Transfer { to, amount },
            &state.genesis_hash(),
        )
    }

    #[test]
    fn future_nonces_wait_for_the_gap_and_blocks_take_them_in_order() {
        let state = GenesisConfig::dev().build().unwrap().state;
        let alice = Keypair::dev("alice");
        let mut pool = Pool::new(100);
        let (_, ready) = pool
            .submit(&state, transfer(&alice, 2, TENSOR, &state))
            .unwrap();
        assert!(!ready);
        pool.submit(&state, transfer(&alice, 1, TENSOR, &state))
            .unwrap();
        let mut b = BlockBuilder::new(&state, alice.account_id(), 1).unwrap();
        assert_eq!(pool.build_block(&mut b), 0);
        assert!(
            b.extrinsics().is_empty(),
            "nonce 0 missing: nothing is ready"
        );
        assert_eq!(pool.next_nonce(&state, &alice.account_id()), 0);
        pool.submit(&state, transfer(&alice, 0, TENSOR, &state))
            .unwrap();
        assert_eq!(pool.next_nonce(&state, &alice.account_id()), 3);
        let mut b = BlockBuilder::new(&state, alice.account_id(), 1).unwrap();
        pool.build_block(&mut b);
        let nonces: Vec<u64> = b.extrinsics().iter().map(|x| x.nonce).collect();
        assert_eq!(nonces, [0, 1, 2]);
        let built = b.finish();
        pool.prune(&built.state);
        assert!(pool.is_empty());
    }

    #[test]
    fn admission_refuses_duplicates_taken_nonces_unaffordable_calls_and_overflow() {
        let state = GenesisConfig::dev().build().unwrap().state;
        let alice = Keypair::dev("alice");
        let mut pool = Pool::new(2);
        let xt = transfer(&alice, 0, TENSOR, &state);
        pool.submit(&state, xt.clone()).unwrap();
        assert!(matches!(
            pool.submit(&state, xt),
            Err(PoolError::AlreadyInPool(_))
        ));
        assert!(matches!(
            pool.submit(&state, transfer(&alice, 0, 2 * TENSOR, &state)),
            Err(PoolError::NonceInPool { nonce: 0, .. })
        ));
        assert!(matches!(
            pool.submit(&state, transfer(&alice, 1, 2_000_000 * TENSOR, &state)),
            Err(PoolError::InsufficientBalance { .. })
        ));
        pool.submit(&state, transfer(&alice, 1, TENSOR, &state))
            .unwrap();
        assert_eq!(
            pool.submit(&state, transfer(&alice, 2, TENSOR, &state)),
            Err(PoolError::Full { max: 2 })
        );
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn an_extrinsic_that_became_invalid_is_dropped_and_the_rest_go_in() {
        let state = GenesisConfig::dev().build().unwrap().state;
        let alice = Keypair::dev("alice");
        let bob = Keypair::dev("bob");
        let fee = state.params().tx_base_fee;
        let free = state.account(&bob.account_id()).free;
        let mut pool = Pool::new(100);
        // Each is affordable on its own; after the first, bob cannot pay
        // the second one's fee.
        pool.submit(&state, transfer(&bob, 0, free - fee - fee / 2, &state))
            .unwrap();
        pool.submit(&state, transfer(&bob, 1, 1, &state)).unwrap();
        pool.submit(&state, transfer(&alice, 0, TENSOR, &state))
            .unwrap();
        let mut b = BlockBuilder::new(&state, alice.account_id(), 2).unwrap();
        let dropped = pool.build_block(&mut b);
        assert_eq!(dropped, 1);
        let included: Vec<(AccountId, u64)> =
            b.extrinsics().iter().map(|x| (x.signer, x.nonce)).collect();
        assert_eq!(included.len(), 2);
        assert!(!included.contains(&(bob.account_id(), 1)));
        let bob_after = b.state().account(&bob.account_id());
        assert_eq!(bob_after.nonce, 1, "the dropped extrinsic changed nothing");
        assert_eq!(bob_after.free, fee / 2);
        let built = b.finish();
        pool.prune(&built.state);
        assert!(pool.is_empty(), "included ones pruned, invalid one dropped");
    }
}
