//! Unit tests of the pool's policy, on states built in memory.

use hypertensor_primitives::{Keypair, TENSOR};
use hypertensor_runtime::{GenesisAccount, GenesisConfig};

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

fn pool(capacity: usize) -> Pool {
    Pool::new(PoolConfig {
        capacity,
        ..PoolConfig::default()
    })
}

/// The dev genesis plus `n` accounts holding `balance` each.
fn state_with_accounts(n: usize, balance: Balance) -> (State, Vec<Keypair>) {
    let keys: Vec<Keypair> = (0..n)
        .map(|i| Keypair::dev(&format!("attacker-{i}")))
        .collect();
    let mut genesis = GenesisConfig::dev();
    genesis.accounts.extend(keys.iter().map(|k| GenesisAccount {
        account: k.account_id(),
        balance,
    }));
    (genesis.build().unwrap().state, keys)
}

/// Builds a block from the pool on `state`, re-validates, returns the new
/// state.
fn next_block(pool: &mut Pool, state: &State) -> (State, Vec<Extrinsic>) {
    let author = Keypair::dev("alice").account_id();
    let mut b = BlockBuilder::new(state, author, state.timestamp_ms() + 1).unwrap();
    pool.build_block(&mut b);
    let built = b.finish();
    pool.revalidate(&built.state);
    (built.state, built.block.extrinsics)
}

#[test]
fn future_nonces_wait_for_the_gap_and_blocks_take_them_in_order() {
    let state = GenesisConfig::dev().build().unwrap().state;
    let alice = Keypair::dev("alice");
    let mut pool = pool(100);
    let (_, ready) = pool
        .submit(&state, transfer(&alice, 2, TENSOR, &state))
        .unwrap();
    assert!(!ready);
    pool.submit(&state, transfer(&alice, 1, TENSOR, &state))
        .unwrap();
    assert_eq!(pool.future_len(), 2);
    let mut b = BlockBuilder::new(&state, alice.account_id(), 1).unwrap();
    assert_eq!(pool.build_block(&mut b), 0);
    assert!(
        b.extrinsics().is_empty(),
        "nonce 0 missing: nothing is ready"
    );
    assert_eq!(pool.next_nonce(&state, &alice.account_id()), 0);
    pool.submit(&state, transfer(&alice, 0, TENSOR, &state))
        .unwrap();
    assert_eq!(pool.future_len(), 0, "the gap is filled");
    assert_eq!(pool.next_nonce(&state, &alice.account_id()), 3);
    let (_, included) = next_block(&mut pool, &state);
    let nonces: Vec<u64> = included.iter().map(|x| x.nonce).collect();
    assert_eq!(nonces, [0, 1, 2]);
    assert!(pool.is_empty());
}

#[test]
fn admission_refuses_duplicates_taken_nonces_unaffordable_calls_and_overflow() {
    let state = GenesisConfig::dev().build().unwrap().state;
    let alice = Keypair::dev("alice");
    let mut pool = pool(2);
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
fn a_transfer_to_oneself_is_refused_before_anything_is_charged() {
    let state = GenesisConfig::dev().build().unwrap().state;
    let alice = Keypair::dev("alice");
    let xt = Extrinsic::sign(
        &alice,
        0,
        Call::Transfer {
            to: alice.account_id(),
            amount: TENSOR,
        },
        &state.genesis_hash(),
    );
    let err = pool(10).submit(&state, xt).unwrap_err();
    assert_eq!(err, PoolError::SelfTransfer(alice.account_id()));
    assert!(err.to_string().contains("to oneself"), "{err}");
}

#[test]
fn one_balance_cannot_back_more_pending_extrinsics_than_it_pays_for() {
    let fee = GenesisConfig::dev().params.tx_base_fee;
    // Enough for exactly three fees and three 1-unit transfers.
    let (state, keys) = state_with_accounts(1, 3 * (fee + 1));
    let k = &keys[0];
    let mut pool = pool(100);
    for n in 0..3 {
        pool.submit(&state, transfer(k, n, 1, &state)).unwrap();
    }
    let err = pool.submit(&state, transfer(k, 3, 1, &state)).unwrap_err();
    assert!(
        matches!(err, PoolError::InsufficientBalance { needed, .. } if needed == 4 * (fee + 1)),
        "{err}"
    );
}

#[test]
fn per_sender_limits_bound_pending_and_future_extrinsics() {
    let state = GenesisConfig::dev().build().unwrap().state;
    let bob = Keypair::dev("bob");
    let mut pool = Pool::new(PoolConfig {
        capacity: 1000,
        max_per_sender: 6,
        max_future_per_sender: 3,
        future_lifetime_blocks: 10,
    });
    for n in 1..=3 {
        pool.submit(&state, transfer(&bob, n, 1, &state)).unwrap();
    }
    let err = pool
        .submit(&state, transfer(&bob, 4, 1, &state))
        .unwrap_err();
    assert!(
        matches!(
            err,
            PoolError::TooManyFuture {
                expected: 0,
                max: 3,
                ..
            }
        ),
        "{err}"
    );
    // Filling the gap makes them ready; then the total limit applies.
    pool.submit(&state, transfer(&bob, 0, 1, &state)).unwrap();
    pool.submit(&state, transfer(&bob, 4, 1, &state)).unwrap();
    pool.submit(&state, transfer(&bob, 5, 1, &state)).unwrap();
    let err = pool
        .submit(&state, transfer(&bob, 6, 1, &state))
        .unwrap_err();
    assert!(matches!(err, PoolError::SenderFull { max: 6, .. }), "{err}");
    assert_eq!(pool.len(), 6);
}

/// The pinning attack of issue 11: many cheap accounts fill the pool
/// with future nonces (never nonce 0), so they never pay a fee.
#[test]
fn future_nonces_from_many_cheap_accounts_cannot_keep_an_honest_transfer_out() {
    let fee = GenesisConfig::dev().params.tx_base_fee;
    let (mut state, keys) = state_with_accounts(64, 64 * (fee + 1));
    let config = PoolConfig {
        capacity: 512,
        max_per_sender: 64,
        max_future_per_sender: 16,
        future_lifetime_blocks: 4,
    };
    let mut pool = Pool::new(config.clone());
    let mut admitted = 0;
    let mut first_two = Vec::new();
    for k in &keys {
        for n in 1..=64 {
            match pool.submit(&state, transfer(k, n, 1, &state)) {
                Ok((hash, _)) => {
                    if first_two.len() < 2 {
                        first_two.push(hash);
                    }
                    admitted += 1;
                }
                Err(PoolError::TooManyFuture { .. } | PoolError::Full { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(admitted, 512, "16 per account until the pool is full");
    assert_eq!(pool.len(), config.capacity);
    assert_eq!(pool.future_len(), config.capacity);
    // An honest ready transfer takes the oldest future one's place.
    let bob = Keypair::dev("bob");
    let (_, ready) = pool
        .submit(&state, transfer(&bob, 0, TENSOR, &state))
        .unwrap();
    assert!(ready);
    assert_eq!(pool.len(), config.capacity);
    // The one evicted is the oldest future one, the next oldest stays.
    assert!(!pool.hashes.contains(&first_two[0]), "the oldest was kept");
    assert!(
        pool.hashes.contains(&first_two[1]),
        "a younger one was evicted"
    );
    // Another future one is refused while the pool is full.
    let late = Keypair::dev("charlie");
    assert_eq!(
        pool.submit(&state, transfer(&late, 1, 1, &state)),
        Err(PoolError::Full { max: 512 })
    );
    let (next, included) = next_block(&mut pool, &state);
    assert_eq!(included.len(), 1);
    assert_eq!(included[0].signer, bob.account_id());
    state = next;
    // Nothing of the attackers' was charged, and their future extrinsics
    // expire after the lifetime.
    for _ in 0..4 {
        let (next, included) = next_block(&mut pool, &state);
        assert!(included.is_empty());
        state = next;
    }
    assert!(pool.is_empty(), "{pool:?}");
    for k in &keys {
        assert_eq!(state.account(&k.account_id()).free, 64 * (fee + 1));
    }
}

#[test]
fn blocks_serve_every_sender_once_before_anyone_twice() {
    let state = GenesisConfig::dev().build().unwrap().state;
    let bob = Keypair::dev("bob");
    let dave = Keypair::dev("dave");
    let mut pool = pool(100);
    for n in 0..5 {
        pool.submit(&state, transfer(&bob, n, 1, &state)).unwrap();
    }
    pool.submit(&state, transfer(&dave, 0, 1, &state)).unwrap();
    let (_, included) = next_block(&mut pool, &state);
    let order: Vec<(AccountId, u64)> = included.iter().map(|x| (x.signer, x.nonce)).collect();
    assert_eq!(order[0], (bob.account_id(), 0));
    assert_eq!(order[1], (dave.account_id(), 0), "{order:?}");
    assert_eq!(order.len(), 6);
}

#[test]
fn revalidation_drops_what_the_sender_can_no_longer_pay_for() {
    let fee = GenesisConfig::dev().params.tx_base_fee;
    let (state, keys) = state_with_accounts(1, 10 * TENSOR);
    let k = &keys[0];
    let mut pool = pool(100);
    pool.submit(&state, transfer(k, 0, TENSOR, &state)).unwrap();
    pool.submit(&state, transfer(k, 1, TENSOR, &state)).unwrap();
    // The account is drained by a block that did not come from the pool.
    let mut b = BlockBuilder::new(&state, Keypair::dev("alice").account_id(), 1).unwrap();
    b.push(transfer(k, 0, 10 * TENSOR - fee, &state)).unwrap();
    let built = b.finish();
    let report = pool.revalidate(&built.state);
    assert_eq!(report.used, 1, "nonce 0 was used by the other block");
    assert_eq!(report.unaffordable, 1);
    assert!(pool.is_empty());
}

#[test]
fn an_extrinsic_that_became_invalid_is_dropped_and_the_rest_go_in() {
    let fee = GenesisConfig::dev().params.tx_base_fee;
    let (state, keys) = state_with_accounts(1, 10 * TENSOR);
    let k = &keys[0];
    let alice = Keypair::dev("alice");
    let mut pool = pool(100);
    pool.submit(&state, transfer(k, 1, TENSOR, &state)).unwrap();
    pool.submit(&state, transfer(&alice, 0, TENSOR, &state))
        .unwrap();
    // Another block (not from this pool) used k's nonce 0 and drained it:
    // k's nonce 1 is ready now but cannot pay its fee.
    let mut b = BlockBuilder::new(&state, alice.account_id(), 1).unwrap();
    b.push(transfer(k, 0, 10 * TENSOR - fee - fee / 2, &state))
        .unwrap();
    let drained = b.finish().state;
    let mut b = BlockBuilder::new(&drained, alice.account_id(), 2).unwrap();
    let dropped = pool.build_block(&mut b);
    assert_eq!(dropped, 1);
    let included: Vec<(AccountId, u64)> =
        b.extrinsics().iter().map(|x| (x.signer, x.nonce)).collect();
    assert_eq!(included, [(alice.account_id(), 0)]);
    let after = b.state().account(&k.account_id());
    assert_eq!(after.nonce, 1, "the dropped extrinsic changed nothing");
    assert_eq!(after.free, fee / 2);
    let built = b.finish();
    pool.revalidate(&built.state);
    assert!(pool.is_empty(), "included one pruned, invalid one dropped");
}

#[test]
fn a_check_made_before_a_block_is_refused_as_stale_after_it() {
    let state = GenesisConfig::dev().build().unwrap().state;
    let alice = Keypair::dev("alice");
    let mut pool = pool(100);
    pool.submit(&state, transfer(&alice, 0, TENSOR, &state))
        .unwrap();
    // Nonce 0 checked against the state before the block that includes
    // the pool's own nonce 0: after that block, the check is stale.
    let again = Pool::check(&state, transfer(&alice, 0, 2 * TENSOR, &state)).unwrap();
    let (after, included) = next_block(&mut pool, &state);
    assert_eq!(included.len(), 1);
    assert!(matches!(
        pool.insert(again),
        Err(PoolError::Stale {
            checked: 0,
            pool: 1
        })
    ));
    // Checked again on the new state, the used nonce is refused for what
    // it is.
    let fresh = Pool::check(&after, transfer(&alice, 0, 2 * TENSOR, &after));
    assert!(fresh.is_err() || pool.insert(fresh.unwrap()).is_err());
    assert!(pool.is_empty());
}
