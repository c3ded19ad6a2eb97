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
//! the node refuses to start. A fresh chain is created only where no file
//! exists; an empty, foreign (not redb, or redb without our genesis
//! record) or damaged file is [`Error::BadDatabase`] naming the file and
//! the problem. redb panics on some damaged pages: every access runs under
//! `catch_unwind`, so such a panic is reported as a damaged file.

use std::path::{Path, PathBuf};

use hypertensor_primitives::H256;
use hypertensor_runtime::{Block, BlockNumber, BuiltBlock, EventRecord, State};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DatabaseProblem, db};
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

/// The first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Name of the file a new database is created in before it is renamed to
/// [`DATABASE_FILE`].
const NEW_DATABASE_FILE: &str = "chain.redb.new";

fn bad(path: &Path, problem: DatabaseProblem) -> Error {
    Error::BadDatabase {
        path: path.display().to_string(),
        problem,
    }
}

/// Storage and decoding errors met while opening mean a damaged file;
/// others (I/O, a state-root mismatch, already open) keep their own words.
fn damaged(path: &Path, error: Error) -> Error {
    match error {
        Error::Database(e) => bad(path, DatabaseProblem::Damaged(e.to_string())),
        Error::Corrupt(e) => bad(path, DatabaseProblem::Damaged(e)),
        other => other,
    }
}

/// Runs `f`, turning a panic inside the storage engine (redb panics on
/// some damaged pages) into [`DatabaseProblem::Damaged`] naming the file.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(bad(
            path,
            DatabaseProblem::Damaged(format!("the storage engine panicked reading it: {reason}")),
        ))
    })
}

/// Refuses a file that does not start like a redb database.
fn check_magic(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut head = [0u8; REDB_MAGIC.len()];
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }
    if head[..read] != REDB_MAGIC[..] {
        return Err(bad(
            path,
            DatabaseProblem::Foreign(format!(
                "not a redb file (it starts with {:02x?}, a redb file with {:02x?})",
                &head[..read],
                REDB_MAGIC
            )),
        ));
    }
    Ok(())
}

/// Creates the database with the genesis block in a temporary file and
/// renames it into place once committed.
fn create(path: &Path, genesis: &BuiltBlock) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(NEW_DATABASE_FILE);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("cannot remove {}", tmp.display()), e)),
    }
    {
        let db = Database::create(&tmp).map_err(db)?;
        let store = Store {
            db,
            path: tmp.clone(),
        };
        store.commit(&genesis.block, &genesis.events, &genesis.state, true)?;
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("cannot rename {} into place", tmp.display()), e))?;
    // The rename itself must be durable before blocks are built on it.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

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
    /// Opens the database in `base_path` for the chain of `genesis`, or
    /// creates it if **no file exists**. A new database gets the genesis
    /// block (written to a temporary file, renamed into place once
    /// committed, so a crash never leaves a half-created database). An
    /// existing file must be a redb database with this chain's tables and
    /// the same genesis, and its state must match the best header's state
    /// root; an empty, foreign or damaged file is
    /// [`Error::BadDatabase`], never a fresh chain. Returns the store and
    /// the best state.
    pub fn open(base_path: &Path, genesis: &BuiltBlock) -> Result<(Store, State)> {
        std::fs::create_dir_all(base_path)
            .map_err(|e| Error::io(format!("cannot create {}", base_path.display()), e))?;
        let path = base_path.join(DATABASE_FILE);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path, genesis)?,
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
            Ok(meta) if meta.len() == 0 => return Err(bad(&path, DatabaseProblem::Empty)),
            Ok(_) => {}
        }
        guarded(&path, || Store::open_existing(&path, genesis))
    }

    fn open_existing(path: &Path, genesis: &BuiltBlock) -> Result<(Store, State)> {
        check_magic(path)?;
        let db = Database::open(path).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
                Error::io(format!("cannot open {}", path.display()), io)
            }
            redb::DatabaseError::Storage(storage) => {
                bad(path, DatabaseProblem::Damaged(storage.to_string()))
            }
            other => db(other),
        })?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        let genesis_hash = genesis.block.hash();
        let stored: H256 = store
            .meta(META_GENESIS)
            .map_err(|e| damaged(path, e))?
            .ok_or_else(|| {
                bad(
                    path,
                    DatabaseProblem::Foreign(
                        "a redb database without the chain's tables (no genesis hash recorded)"
                            .into(),
                    ),
                )
            })?;
        if stored != genesis_hash {
            return Err(Error::GenesisMismatch {
                path: path.display().to_string(),
                stored,
                configured: genesis_hash,
            });
        }
        let state = store.load_state().map_err(|e| damaged(path, e))?;
        Ok((store, state))
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
        guarded(&self.path, || self.commit(block, events, state, false))
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
        guarded(&self.path, || self.get(BLOCKS, height, "block"))
    }

    /// The events of the block at `height`.
    pub fn events(&self, height: BlockNumber) -> Result<Option<Vec<EventRecord>>> {
        guarded(&self.path, || self.get(EVENTS, height, "events"))
    }

    /// The height of the block with `hash`.
    pub fn height_of(&self, hash: &H256) -> Result<Option<BlockNumber>> {
        guarded(&self.path, || {
            let txn = self.db.begin_read().map_err(db)?;
            let table = txn.open_table(HASHES).map_err(db)?;
            Ok(table.get(&hash.0).map_err(db)?.map(|v| v.value()))
        })
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

    fn bad_problem(err: Error) -> DatabaseProblem {
        match err {
            Error::BadDatabase { path, problem } => {
                assert!(path.ends_with(DATABASE_FILE), "{path}");
                problem
            }
            other => panic!("expected BadDatabase, got {other}"),
        }
    }

    #[test]
    fn an_empty_file_is_refused_and_never_taken_for_a_fresh_chain() {
        let dir = temp_dir("empty");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(DATABASE_FILE), b"").unwrap();
        let genesis = GenesisConfig::dev().build().unwrap();
        let err = Store::open(&dir, &genesis).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("chain.redb") && text.contains("empty"),
            "{text}"
        );
        assert_eq!(bad_problem(err), DatabaseProblem::Empty);
        assert_eq!(
            std::fs::metadata(dir.join(DATABASE_FILE)).unwrap().len(),
            0,
            "left as it was"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn foreign_files_are_refused() {
        let dir = temp_dir("foreign");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(DATABASE_FILE);
        let genesis = GenesisConfig::dev().build().unwrap();
        std::fs::write(&file, b"SQLite format 3\0 and then some").unwrap();
        let err = Store::open(&dir, &genesis).unwrap_err();
        assert!(err.to_string().contains("not a redb file"), "{err}");
        assert!(matches!(bad_problem(err), DatabaseProblem::Foreign(_)));
        // A redb file of someone else's, with other tables.
        std::fs::remove_file(&file).unwrap();
        {
            let db = Database::create(&file).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let other: TableDefinition<&str, &str> = TableDefinition::new("settings");
                txn.open_table(other).unwrap().insert("a", "b").unwrap();
            }
            txn.commit().unwrap();
        }
        let err = Store::open(&dir, &genesis).unwrap_err();
        assert!(
            err.to_string().contains("without the chain's tables"),
            "{err}"
        );
        assert!(matches!(bad_problem(err), DatabaseProblem::Foreign(_)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_panic_inside_the_store_is_reported_as_damage_naming_the_file() {
        let path = Path::new("/data/chain/chain.redb");
        let err = guarded::<()>(path, || panic!("page 7: invalid checksum")).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("configuration"), "{text}");
        assert!(text.contains("/data/chain/chain.redb"), "{text}");
        match bad_problem(err) {
            DatabaseProblem::Damaged(reason) => {
                assert!(reason.contains("page 7: invalid checksum"), "{reason}")
            }
            other => panic!("expected damage, got {other}"),
        }
        // What does not panic passes through untouched.
        assert_eq!(guarded(path, || Ok(7)).unwrap(), 7);
    }

    #[test]
    fn damaged_pages_are_refused_as_damaged_not_as_configuration() {
        let dir = temp_dir("damaged");
        let genesis = GenesisConfig::dev().build().unwrap();
        drop(Store::open(&dir, &genesis).unwrap());
        let file = dir.join(DATABASE_FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        // Keep redb's header (the first page); overwrite everything after.
        for b in bytes.iter_mut().skip(4096) {
            *b = 0xA5;
        }
        std::fs::write(&file, &bytes).unwrap();
        let err = Store::open(&dir, &genesis).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("chain.redb") && text.contains("damaged"),
            "{text}"
        );
        assert!(matches!(bad_problem(err), DatabaseProblem::Damaged(_)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_left_over_half_created_database_is_replaced_by_a_fresh_one() {
        let dir = temp_dir("half");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(NEW_DATABASE_FILE), b"crashed while creating").unwrap();
        let genesis = GenesisConfig::dev().build().unwrap();
        let (_, state) = Store::open(&dir, &genesis).unwrap();
        assert_eq!(state.height(), 0);
        assert!(!dir.join(NEW_DATABASE_FILE).exists());
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
