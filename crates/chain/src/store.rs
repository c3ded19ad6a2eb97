//! Block and state storage in redb.
//!
//! Tables: `blocks` (height -> block JSON), `events` (height -> events
//! JSON), `hashes` (block hash -> height), `meta` (`genesis_hash`, `best`
//! height, `state` = JSON of the state after the best block).
//!
//! [`Store::commit_block`] writes a block, its events, its hash index, the
//! new state and the new best height in **one** write transaction with
//! redb's default durability (fsync before commit returns): after a crash
//! the database holds either all of a block or none of it, so a block
//! reported committed is never lost.
//!
//! [`Store::open`] reloads the state, recomputes its root and compares it
//! with the best header's: a mismatch is [`Error::StateRootMismatch`] and
//! the node refuses to start.

use std::path::{Path, PathBuf};

use hypertensor_primitives::H256;
use hypertensor_runtime::{Block, BlockNumber, BuiltBlock, EventRecord, State};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::db;
use crate::{Error, Result};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const HASHES: TableDefinition<&[u8; 32], u64> = TableDefinition::new("hashes");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const META_GENESIS: &str = "genesis_hash";
const META_BEST: &str = "best";
const META_STATE: &str = "state";

/// File name of the database inside the base path.
pub const DATABASE_FILE: &str = "chain.redb";

/// The node's database.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt(format!("cannot encode: {e}")))
}

fn from_bytes<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("cannot decode {what}: {e}")))
}

impl Store {
    /// Opens (or creates) the database in `base_path` for the chain of
    /// `genesis`. A new database gets the genesis block; an existing one
    /// must hold the same genesis, and its state must match the best
    /// header's state root. Returns the store and the best state.
    pub fn open(base_path: &Path, genesis: &BuiltBlock) -> Result<(Store, State)> {
        std::fs::create_dir_all(base_path)
            .map_err(|e| Error::io(format!("cannot create {}", base_path.display()), e))?;
        let path = base_path.join(DATABASE_FILE);
        let db = Database::create(&path).map_err(db)?;
        let store = Store { db, path };
        let genesis_hash = genesis.block.hash();
        let stored_genesis: Option<H256> = store.meta(META_GENESIS)?;
        match stored_genesis {
            None => {
                store.commit(&genesis.block, &genesis.events, &genesis.state, true)?;
                Ok((store, genesis.state.clone()))
            }
            Some(stored) if stored != genesis_hash => Err(Error::GenesisMismatch {
                path: store.path.display().to_string(),
                stored,
                configured: genesis_hash,
            }),
            Some(_) => {
                let state = store.load_state()?;
                Ok((store, state))
            }
        }
    }

    /// Loads the best state and checks it against the best header.
    fn load_state(&self) -> Result<State> {
        let best: BlockNumber = self
            .meta(META_BEST)?
            .ok_or_else(|| Error::Corrupt("no best block recorded".into()))?;
        let state: State = self
            .meta(META_STATE)?
            .ok_or_else(|| Error::Corrupt("no state recorded".into()))?;
        let block = self
            .block(best)?
            .ok_or_else(|| Error::Corrupt(format!("best block {best} missing")))?;
        let computed = state.state_root();
        if state.height() != best || computed != block.header.state_root {
            return Err(Error::StateRootMismatch {
                height: best,
                header: block.header.state_root,
                computed,
            });
        }
        if state.best_hash() != block.hash() {
            return Err(Error::Corrupt(format!(
                "state records best block {}, but block {best} is {}",
                state.best_hash(),
                block.hash()
            )));
        }
        Ok(state)
    }

    /// Writes a block, its events and the state after it, atomically.
    pub fn commit_block(&self, block: &Block, events: &[EventRecord], state: &State) -> Result<()> {
        self.commit(block, events, state, false)
    }

    fn commit(
        &self,
        block: &Block,
        events: &[EventRecord],
        state: &State,
        genesis: bool,
    ) -> Result<()> {
        let height = block.header.height;
        let hash = block.hash();
        let block_bytes = to_bytes(block)?;
        let event_bytes = to_bytes(&events)?;
        let state_bytes = to_bytes(state)?;
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(db)?;
            blocks.insert(height, block_bytes.as_slice()).map_err(db)?;
            let mut table = txn.open_table(EVENTS).map_err(db)?;
            table.insert(height, event_bytes.as_slice()).map_err(db)?;
            let mut hashes = txn.open_table(HASHES).map_err(db)?;
            hashes.insert(&hash.0, height).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            if genesis {
                meta.insert(META_GENESIS, to_bytes(&hash)?.as_slice())
                    .map_err(db)?;
            }
            meta.insert(META_BEST, to_bytes(&height)?.as_slice())
                .map_err(db)?;
            meta.insert(META_STATE, state_bytes.as_slice())
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db(e)),
        };
        match table.get(key).map_err(db)? {
            Some(value) => from_bytes(value.value(), key).map(Some),
            None => Ok(None),
        }
    }

    /// The block at `height`.
    pub fn block(&self, height: BlockNumber) -> Result<Option<Block>> {
        self.get(BLOCKS, height, "block")
    }

    /// The events of the block at `height`.
    pub fn events(&self, height: BlockNumber) -> Result<Option<Vec<EventRecord>>> {
        self.get(EVENTS, height, "events")
    }

    /// The height of the block with `hash`.
    pub fn height_of(&self, hash: &H256) -> Result<Option<BlockNumber>> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(HASHES).map_err(db)?;
        Ok(table.get(&hash.0).map_err(db)?.map(|v| v.value()))
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        height: BlockNumber,
        what: &str,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(table).map_err(db)?;
        match table.get(height).map_err(db)? {
            Some(value) => from_bytes(value.value(), what).map(Some),
            None => Ok(None),
        }
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use hypertensor_primitives::{Keypair, TENSOR};
    use hypertensor_runtime::{BlockBuilder, Call, Extrinsic, GenesisConfig};

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hypertensor-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn blocks_and_state_survive_reopening() {
        let dir = temp_dir("reopen");
        let genesis = GenesisConfig::dev().build().unwrap();
        let (store, state) = Store::open(&dir, &genesis).unwrap();
        let alice = Keypair::dev("alice");
        let mut b = BlockBuilder::new(&state, alice.account_id(), 1).unwrap();
        let to = Keypair::dev("bob").account_id();
        let xt = Extrinsic::sign(
            &alice,
            0,
            Call::Transfer { to, amount: TENSOR },
            &state.genesis_hash(),
        );
        b.push(xt).unwrap();
        let built = b.finish();
        store
            .commit_block(&built.block, &built.events, &built.state)
            .unwrap();
        drop(store);
        let (store, reloaded) = Store::open(&dir, &genesis).unwrap();
        assert_eq!(reloaded, built.state);
        assert_eq!(store.block(1).unwrap().unwrap(), built.block);
        assert_eq!(store.height_of(&built.block.hash()).unwrap(), Some(1));
        assert_eq!(store.events(1).unwrap().unwrap(), built.events);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn another_genesis_is_refused() {
        let dir = temp_dir("genesis");
        let genesis = GenesisConfig::dev().build().unwrap();
        drop(Store::open(&dir, &genesis).unwrap());
        let mut other = GenesisConfig::dev();
        other.timestamp_ms = 5;
        let err = Store::open(&dir, &other.build().unwrap()).unwrap_err();
        assert!(matches!(err, Error::GenesisMismatch { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tampered_state_is_refused_with_a_clear_error() {
        let dir = temp_dir("tamper");
        let genesis = GenesisConfig::dev().build().unwrap();
        let (store, _) = Store::open(&dir, &genesis).unwrap();
        // Write a state whose root differs from the stored header's.
        let mut other = GenesisConfig::dev();
        other.accounts.pop();
        let tampered = other.build().unwrap().state;
        let txn = store.db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_STATE, to_bytes(&tampered).unwrap().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        drop(store);
        let err = Store::open(&dir, &genesis).unwrap_err();
        assert!(matches!(err, Error::StateRootMismatch { .. }), "{err}");
        assert!(err.to_string().contains("refusing to start"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
