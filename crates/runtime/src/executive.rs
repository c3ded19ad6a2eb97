//! Block execution: building blocks, importing them, and validating
//! extrinsics for a transaction pool (SPEC §3.6).
//!
//! A block at height `h` runs:
//!
//! 1. **initialization**: if `h` is the first block of epoch `e`, the epoch
//!    hooks of [`epoch`](crate::epoch) (settle `e - 1`, ..., elect for `e`,
//!    seeded by the parent hash); then the subsidy of `h` is minted,
//!    `block_author_share` to the author, the rest to the vault;
//! 2. **extrinsics**, in order. Each must be *valid* (stateless call checks,
//!    exact nonce, fee payable, signature): otherwise the block is invalid.
//!    A valid extrinsic bumps the nonce and pays `tx_base_fee`
//!    (`block_author_share` to the author, the rest to the vault), then its
//!    call runs: on success its effects and events are kept (and
//!    `propose_attestation` / `attest` get their fee back); on failure
//!    nothing but the fee and nonce changes and `ExtrinsicFailed` names the
//!    error.

use hypertensor_primitives::{AccountId, Balance, H256};
use serde::{Deserialize, Serialize};

use crate::block::{Block, Extrinsic, Header, extrinsics_root};
use crate::event::{Event, EventRecord, Phase};
use crate::state::State;
use crate::subsidy::minted_at;
use crate::{Error, Result};

/// What a transaction pool learns from [`State::validate_extrinsic`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxValidity {
    /// The nonce is the account's next: it can go into the next block.
    pub ready: bool,
    /// The account's current nonce (extrinsics with nonces between it and
    /// this one must come first).
    pub account_nonce: u64,
    /// The fee it will pay if included (refunded for successful
    /// `propose_attestation` and `attest`).
    pub fee: Balance,
}

/// Whether to verify signatures when applying an extrinsic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Verify (block import, untrusted extrinsics).
    Verify,
    /// Skip: only for extrinsics whose signature was already verified
    /// against this chain's genesis hash (for example at pool submission).
    AlreadyVerified,
}

/// How the nonce must relate to the account's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NonceRule {
    /// Exactly the account's nonce (inside a block).
    Exact,
    /// From the account's nonce up to `max_future_nonces` ahead (a pool).
    Pool,
}

impl State {
    /// Validation for a transaction pool: stateless call checks, nonce not
    /// used and not too far ahead, fee payable now, signature valid for this
    /// network. Checks that depend on the rest of the state (balances for
    /// the call itself, classes, epochs) happen when the call runs in a
    /// block, where failing costs the fee.
    pub fn validate_extrinsic(&self, xt: &Extrinsic) -> Result<TxValidity> {
        self.check_extrinsic(xt, NonceRule::Pool, SignatureCheck::Verify)
    }

    fn check_extrinsic(
        &self,
        xt: &Extrinsic,
        rule: NonceRule,
        sig: SignatureCheck,
    ) -> Result<TxValidity> {
        xt.call.check_stateless(&self.params)?;
        let account = self.account(&xt.signer);
        let expected = account.nonce;
        if xt.nonce < expected {
            return Err(Error::StaleNonce {
                expected,
                got: xt.nonce,
            });
        }
        let max_ahead = match rule {
            NonceRule::Exact => 0,
            NonceRule::Pool => self.params.max_future_nonces,
        };
        if xt.nonce - expected > max_ahead {
            return Err(Error::FutureNonce {
                expected,
                got: xt.nonce,
            });
        }
        let fee = self.params.tx_base_fee;
        if account.free < fee {
            return Err(Error::CannotPayFee {
                fee,
                free: account.free,
            });
        }
        if sig == SignatureCheck::Verify {
            xt.verify_signature(&self.genesis_hash)?;
        }
        Ok(TxValidity {
            ready: xt.nonce == expected,
            account_nonce: expected,
            fee,
        })
    }

    /// Splits `amount` between the author and the vault.
    fn pay_author_and_vault(&mut self, author: &AccountId, amount: Balance) -> Balance {
        let author_share = self.params.block_author_share.mul_floor_unit(amount);
        self.credit(author, author_share);
        self.vault += amount - author_share;
        author_share
    }
}

/// A finished block with the state after it and its events.
#[derive(Clone, Debug)]
pub struct BuiltBlock {
    /// The block (header with state and extrinsics roots).
    pub block: Block,
    /// The state after the block.
    pub state: State,
    /// The block's events, in order.
    pub events: Vec<EventRecord>,
}

/// What happened to an extrinsic a block builder accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The call succeeded.
    Success,
    /// The call failed: the extrinsic is in the block, paid its fee and
    /// bumped its nonce, and changed nothing else.
    Failed(Error),
}

/// Builds a block on top of a state: initialization at creation, then
/// extrinsics one by one; an invalid extrinsic is refused and leaves the
/// pending state untouched.
#[derive(Clone, Debug)]
pub struct BlockBuilder {
    state: State,
    parent_hash: H256,
    author: AccountId,
    extrinsics: Vec<Extrinsic>,
    events: Vec<EventRecord>,
}

impl BlockBuilder {
    /// Starts the block after `parent`, authored by `author` at
    /// `timestamp_ms` (not before the parent's), and runs its initialization.
    pub fn new(parent: &State, author: AccountId, timestamp_ms: u64) -> Result<BlockBuilder> {
        if timestamp_ms < parent.timestamp_ms {
            return Err(Error::TimestampBeforeParent {
                parent: parent.timestamp_ms,
                got: timestamp_ms,
            });
        }
        let mut state = parent.clone();
        let parent_hash = parent.best_hash;
        state.height += 1;
        state.timestamp_ms = timestamp_ms;
        let height = state.height;
        let mut events = Vec::new();
        if height.is_multiple_of(state.params.epoch_length) {
            state.on_epoch_start(
                height / state.params.epoch_length,
                &parent_hash,
                &mut events,
            );
        }
        let minted = minted_at(&state.params, height, state.total_issuance);
        if minted > 0 {
            state.total_issuance += minted;
            let author_share = state.pay_author_and_vault(&author, minted);
            events.push(Event::SubsidyMinted {
                height,
                amount: minted,
                author_share,
            });
        }
        Ok(BlockBuilder {
            state,
            parent_hash,
            author,
            extrinsics: Vec::new(),
            events: events
                .into_iter()
                .map(|event| EventRecord {
                    phase: Phase::Initialization,
                    event,
                })
                .collect(),
        })
    }

    /// The pending state (after initialization and the extrinsics so far).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Extrinsics accepted so far.
    pub fn extrinsics(&self) -> &[Extrinsic] {
        &self.extrinsics
    }

    /// Applies an extrinsic, verifying its signature. `Err` means invalid:
    /// not included, nothing changed. `Ok(Applied::Failed)` means included
    /// with a failed call.
    pub fn push(&mut self, xt: Extrinsic) -> Result<Applied> {
        self.push_with(xt, SignatureCheck::Verify)
    }

    /// Applies an extrinsic with the given signature policy (see
    /// [`SignatureCheck`]).
    pub fn push_with(&mut self, xt: Extrinsic, sig: SignatureCheck) -> Result<Applied> {
        let max = self.state.params.max_block_extrinsics;
        if self.extrinsics.len() >= max as usize {
            return Err(Error::BlockFull { max });
        }
        let validity = self.state.check_extrinsic(&xt, NonceRule::Exact, sig)?;
        // --- included from here on ---
        let index = u32::try_from(self.extrinsics.len()).unwrap_or(u32::MAX);
        let fee = validity.fee;
        let signer = xt.signer;
        {
            let account = self.state.account_mut(&signer);
            account.nonce += 1;
            account.free -= fee; // checked payable above
        }
        let mut call_events = Vec::new();
        let result = self.state.dispatch(&signer, &xt.call, &mut call_events);
        let charged = if result.is_ok() && xt.call.is_free_when_valid() {
            self.state.credit(&signer, fee);
            0
        } else {
            fee
        };
        let mut events = Vec::with_capacity(call_events.len() + 2);
        if charged > 0 {
            let author_share = self.state.pay_author_and_vault(&self.author, charged);
            events.push(Event::FeePaid {
                who: signer,
                amount: charged,
                author_share,
            });
        }
        let applied = match result {
            Ok(()) => {
                events.extend(call_events);
                events.push(Event::ExtrinsicSuccess);
                Applied::Success
            }
            Err(error) => {
                events.push(Event::ExtrinsicFailed {
                    error: error.clone(),
                });
                Applied::Failed(error)
            }
        };
        self.events
            .extend(events.into_iter().map(|event| EventRecord {
                phase: Phase::Extrinsic(index),
                event,
            }));
        self.extrinsics.push(xt);
        Ok(applied)
    }

    /// Seals the block: computes the roots, builds the header.
    pub fn finish(self) -> BuiltBlock {
        let mut state = self.state;
        let header = Header {
            height: state.height,
            parent_hash: self.parent_hash,
            state_root: state.state_root(),
            extrinsics_root: extrinsics_root(&self.extrinsics),
            author: self.author,
            timestamp_ms: state.timestamp_ms,
        };
        state.best_hash = header.hash();
        BuiltBlock {
            block: Block {
                header,
                extrinsics: self.extrinsics,
            },
            state,
            events: self.events,
        }
    }
}

/// Imports `block` on top of `state`: the pure state transition function.
///
/// Checks height, parent hash, timestamp and extrinsics root, applies every
/// extrinsic (all must be valid), and checks the resulting state root.
/// Returns the new state and the block's events; on any error `state` is
/// untouched (it is only read) and the error names the reason.
pub fn apply_block(state: &State, block: &Block) -> Result<(State, Vec<EventRecord>)> {
    apply_block_with(state, block, &|_| false)
}

/// [`apply_block`] that skips the signature check of extrinsics for which
/// `verified(hash)` is true: the caller already verified exactly those
/// bytes against this chain (a validator's pool verified them at
/// admission; the hash covers the signature). Everything else is checked
/// as in [`apply_block`].
pub fn apply_block_with(
    state: &State,
    block: &Block,
    verified: &dyn Fn(&H256) -> bool,
) -> Result<(State, Vec<EventRecord>)> {
    let header = &block.header;
    if header.height != state.height + 1 {
        return Err(Error::WrongHeight {
            expected: state.height + 1,
            got: header.height,
        });
    }
    if header.parent_hash != state.best_hash {
        return Err(Error::WrongParent {
            expected: state.best_hash,
            got: header.parent_hash,
        });
    }
    let hashes: Vec<H256> = block.extrinsics.iter().map(Extrinsic::hash).collect();
    let computed = crate::block::extrinsics_root_of_hashes(&hashes);
    if computed != header.extrinsics_root {
        return Err(Error::ExtrinsicsRootMismatch {
            header: header.extrinsics_root,
            computed,
        });
    }
    let mut builder = BlockBuilder::new(state, header.author, header.timestamp_ms)?;
    for (index, (xt, hash)) in block.extrinsics.iter().zip(&hashes).enumerate() {
        let check = if verified(hash) {
            SignatureCheck::AlreadyVerified
        } else {
            SignatureCheck::Verify
        };
        builder
            .push_with(xt.clone(), check)
            .map_err(|reason| Error::InvalidExtrinsic {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                reason: Box::new(reason),
            })?;
    }
    let built = builder.finish();
    if built.block.header.state_root != header.state_root {
        return Err(Error::StateRootMismatch {
            header: header.state_root,
            computed: built.block.header.state_root,
        });
    }
    Ok((built.state, built.events))
}
