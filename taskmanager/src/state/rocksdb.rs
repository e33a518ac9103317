//! The RocksDB backend: keyed state in an embedded RocksDB instance on local disk, one per subtask.
//!
//! Each subtask opens its own instance in a fresh directory under the TaskManager's state directory and
//! removes that directory when the backend is dropped: the local files are a working copy, and
//! checkpoints (snapshots) are what makes state durable, as in Flink. So writes skip the write-ahead log,
//! and closing the instance does not flush its memtables.
//!
//! Every registered state is a column family. List state appends through a merge operator that
//! concatenates bytes, so adding an element never reads the list back. Prefix scans seek to the prefix and
//! stop at the first key without it (the iterator is also bounded by the prefix's successor, so RocksDB
//! does not read past it); there is no prefix extractor, so any prefix works.
//!
//! Memory stays bounded whatever the state's size: each instance's memtables are capped at
//! `write_buffer_size × max_write_buffers` over all its states, and data, index and filter blocks live in
//! one LRU block cache that every instance of the TaskManager shares ([`RocksDbSettings`]).
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBRawIterator, Direction, IteratorMode, MergeOperands, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use rocksdb::checkpoint::Checkpoint;

use super::{
    key_group_of_state_key, DeferredSnapshot, Entries, EntryVisitor, KeyedStateBackend, NativeFiles, StateError,
    StateId, StateSnapshot,
};

const MIB: usize = 1024 * 1024;

/// Size of one partition of a file's index and filter blocks: the unit the block cache loads on a lookup.
const METADATA_BLOCK_BYTES: usize = 4 * 1024;

/// A restore writes its entries in batches of about this many bytes.
const RESTORE_BATCH_BYTES: usize = 4 * MIB;

/// RocksDB settings of a TaskManager, shared by all its instances (cloning shares the block cache).
#[derive(Clone)]
pub struct RocksDbSettings {
    /// Bytes of one memtable of one state.
    pub write_buffer_size: usize,
    /// Memtables per state held in memory (the active one and those waiting to be flushed).
    pub max_write_buffers: u32,
    block_cache_size: usize,
    /// The LRU cache of data, index and filter blocks, shared by every instance.
    block_cache: Cache,
}

impl RocksDbSettings {
    pub fn new(write_buffer_size: usize, max_write_buffers: u32, block_cache_size: usize) -> Self {
        Self {
            write_buffer_size,
            max_write_buffers,
            block_cache_size,
            block_cache: Cache::new_lru_cache(block_cache_size),
        }
    }

    /// The cap on one instance's memtables, over all its states.
    pub fn memtable_budget(&self) -> usize {
        self.write_buffer_size.saturating_mul(self.max_write_buffers as usize)
    }

    pub fn block_cache_size(&self) -> usize {
        self.block_cache_size
    }

    /// The options of an instance and of each of its column families.
    fn options(&self) -> Result<Options, StateError> {
        // Without a write-ahead log, closing an instance would flush its memtables to files that are
        // deleted right after; `avoid_flush_during_shutdown` is only settable through an options string.
        let mut options = Options::default()
            .get_options_from_string("avoid_flush_during_shutdown=true")
            .map_err(|e| StateError(format!("RocksDB options: {e}")))?;
        options.create_if_missing(true);
        options.set_db_write_buffer_size(self.memtable_budget());
        options.set_write_buffer_size(self.write_buffer_size);
        options.set_max_write_buffer_number(i32::try_from(self.max_write_buffers).unwrap_or(i32::MAX));
        // No compression codec is built in: state is local, and the disk is cheaper than the CPU.
        options.set_compression_type(DBCompressionType::None);
        options.set_merge_operator_associative("sluice.concat", concat_merge);
        // RocksDB's own log: one small file.
        options.set_keep_log_file_num(1);
        options.set_max_log_file_size(MIB);
        options.set_stats_dump_period_sec(0);

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.block_cache);
        // Index and filter blocks count against the cache too, or they would grow with the state. They are
        // partitioned into small blocks under a pinned top level: with one filter block per file, a cache
        // smaller than the filters re-reads (and checksums) megabytes on every lookup of a new key.
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(METADATA_BLOCK_BYTES);
        table.set_pin_top_level_index_and_filter(true);
        table.set_bloom_filter(10.0, false);
        options.set_block_based_table_factory(&table);
        Ok(options)
    }
}

impl Default for RocksDbSettings {
    fn default() -> Self {
        Self::new(64 * MIB, 2, 64 * MIB)
    }
}

impl fmt::Debug for RocksDbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbSettings")
            .field("write_buffer_size", &self.write_buffer_size)
            .field("max_write_buffers", &self.max_write_buffers)
            .field("block_cache_size", &self.block_cache_size)
            .finish()
    }
}

/// The merge operator behind [`KeyedStateBackend::append`]: the existing value followed by the operands.
fn concat_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let length = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut merged = Vec::with_capacity(length);
    merged.extend_from_slice(existing.unwrap_or_default());
    for operand in operands {
        merged.extend_from_slice(operand);
    }
    Some(merged)
}

/// A registered state: its name and its column family's name.
struct State {
    name: String,
    column_family: String,
}

/// Keyed state in an embedded RocksDB instance that owns its directory.
pub struct RocksDbBackend {
    /// Declared before `dir`: fields drop in order, so the instance is closed before its files go.
    db: DB,
    /// Indexed by [`StateId`].
    states: Vec<State>,
    /// Options for the column families created on register and restore.
    options: Options,
    write: WriteOptions,
    dir: StateDir,
}

impl RocksDbBackend {
    /// Opens a new, empty instance in `dir`, which must not exist yet (its parent is created if needed).
    /// The directory is removed when the backend is dropped, or right away if opening fails.
    pub fn open(dir: PathBuf, settings: &RocksDbSettings) -> Result<Self, StateError> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StateError(format!("cannot create the state directory {}: {e}", parent.display())))?;
        }
        std::fs::create_dir(&dir)
            .map_err(|e| StateError(format!("cannot create the RocksDB directory {}: {e}", dir.display())))?;
        let dir = StateDir(dir);
        let options = settings.options()?;
        let db = DB::open(&options, &dir.0)
            .map_err(|e| StateError(format!("cannot open RocksDB in {}: {e}", dir.0.display())))?;
        let mut write = WriteOptions::default();
        // Checkpoints make state durable; the local instance is thrown away on failure.
        write.disable_wal(true);
        Ok(Self { db, states: Vec::new(), options, write, dir })
    }

    /// The instance's directory.
    pub fn path(&self) -> &Path {
        &self.dir.0
    }

    fn state(&self, state: StateId) -> Result<(&State, &ColumnFamily), StateError> {
        let registered =
            self.states.get(state.0 as usize).ok_or_else(|| StateError(format!("unknown state id {}", state.0)))?;
        let column_family = self
            .db
            .cf_handle(&registered.column_family)
            .ok_or_else(|| StateError(format!("state '{}': its RocksDB column family is missing", registered.name)))?;
        Ok((registered, column_family))
    }
}

/// A RocksDB error as a state error, saying what failed (formatted only when it did).
fn failed<'a>(what: &'a str, state: &'a State) -> impl FnOnce(rocksdb::Error) -> StateError + 'a {
    move |e| StateError(format!("RocksDB {what} in state '{}': {e}", state.name))
}

/// The smallest key above every key that starts with `prefix`, if there is one (not for 0xff… prefixes).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&byte| byte != u8::MAX)?;
    let mut successor = prefix[..=last].to_vec();
    successor[last] += 1;
    Some(successor)
}

/// A RocksDB native checkpoint (hard links to the instance's files, taken as of the barrier), read by opening
/// it read-only; its directory is removed when it is dropped, read or not.
struct NativeSnapshot {
    /// Declared first of the fields that matter: nothing holds the directory open when it is removed.
    dir: StateDir,
    /// (state name, column family), in registration order.
    states: Vec<(String, String)>,
    options: Options,
    /// The instance's directory name (unique per instance).
    instance: String,
}

/// Visits the entries of a RocksDB native checkpoint in `dir` (downloaded for a restore) as a deferred
/// snapshot does, then removes `dir`.
pub fn read_native_checkpoint(
    dir: PathBuf,
    states: Vec<(String, String)>,
    settings: &RocksDbSettings,
    visit: &mut EntryVisitor<'_>,
) -> Result<(), StateError> {
    let options = settings.options()?;
    let snapshot = NativeSnapshot { dir: StateDir(dir), states, options, instance: String::new() };
    Box::new(snapshot).for_each(visit)
}

impl DeferredSnapshot for NativeSnapshot {
    fn native(&self) -> Option<NativeFiles<'_>> {
        Some(NativeFiles { dir: &self.dir.0, instance: &self.instance, states: &self.states })
    }

    fn for_each(self: Box<Self>, visit: &mut EntryVisitor<'_>) -> Result<(), StateError> {
        // Every column family with the instance's options: reading list state needs its merge operator.
        let families: Vec<ColumnFamilyDescriptor> =
            self.states.iter().map(|(_, cf)| ColumnFamilyDescriptor::new(cf, self.options.clone())).collect();
        let db = DB::open_cf_descriptors_read_only(&self.options, &self.dir.0, families, false)
            .map_err(|e| StateError(format!("cannot open the RocksDB checkpoint {}: {e}", self.dir.0.display())))?;
        for (name, family) in &self.states {
            let column_family = db
                .cf_handle(family)
                .ok_or_else(|| StateError(format!("state '{name}': not in the RocksDB checkpoint")))?;
            let mut read = ReadOptions::default();
            read.fill_cache(false);
            let mut iterator = db.raw_iterator_cf_opt(column_family, read);
            iterator.seek_to_first();
            while let (Some(key), Some(value)) = (iterator.key(), iterator.value()) {
                visit(name, key, value).map_err(StateError)?;
                iterator.next();
            }
            iterator.status().map_err(|e| StateError(format!("reading the checkpoint of state '{name}': {e}")))?;
        }
        Ok(())
    }
}

impl KeyedStateBackend for RocksDbBackend {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn register(&mut self, name: &str) -> Result<StateId, StateError> {
        if let Some(index) = self.states.iter().position(|state| state.name == name) {
            return Ok(StateId(index as u32));
        }
        // Prefixed so that no state name clashes with RocksDB's "default" column family.
        let column_family = format!("state:{name}");
        self.db
            .create_cf(&column_family, &self.options)
            .map_err(|e| StateError(format!("RocksDB cannot create the column family of state '{name}': {e}")))?;
        self.states.push(State { name: name.to_string(), column_family });
        Ok(StateId(self.states.len() as u32 - 1))
    }

    fn get(&mut self, state: StateId, key: &[u8], value: &mut Vec<u8>) -> Result<bool, StateError> {
        value.clear();
        let (registered, column_family) = self.state(state)?;
        match self.db.get_pinned_cf(column_family, key).map_err(failed("get", registered))? {
            Some(stored) => {
                value.extend_from_slice(&stored);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn put(&mut self, state: StateId, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let (registered, column_family) = self.state(state)?;
        self.db.put_cf_opt(column_family, key, value, &self.write).map_err(failed("put", registered))
    }

    fn delete(&mut self, state: StateId, key: &[u8]) -> Result<(), StateError> {
        let (registered, column_family) = self.state(state)?;
        self.db.delete_cf_opt(column_family, key, &self.write).map_err(failed("delete", registered))
    }

    fn append(&mut self, state: StateId, key: &[u8], bytes: &[u8]) -> Result<(), StateError> {
        let (registered, column_family) = self.state(state)?;
        self.db.merge_cf_opt(column_family, key, bytes, &self.write).map_err(failed("append (merge)", registered))
    }

    fn scan_prefix(
        &mut self,
        state: StateId,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        let (registered, column_family) = self.state(state)?;
        let mut read = ReadOptions::default();
        if let Some(end) = prefix_successor(prefix) {
            read.set_iterate_upper_bound(end);
        }
        // Seek to the prefix, then walk the raw iterator: it lends keys and values without copying them.
        let mut entries: DBRawIterator<'_> =
            self.db.iterator_cf_opt(column_family, read, IteratorMode::From(prefix, Direction::Forward)).into();
        while let (Some(key), Some(value)) = (entries.key(), entries.value()) {
            if !key.starts_with(prefix) || !visit(key, value) {
                break;
            }
            entries.next();
        }
        entries.status().map_err(failed("prefix scan", registered))
    }

    fn snapshot(&mut self) -> Result<StateSnapshot, StateError> {
        let snapshot = self.db.snapshot();
        let mut states = Vec::with_capacity(self.states.len());
        for state in &self.states {
            let column_family = self
                .db
                .cf_handle(&state.column_family)
                .ok_or_else(|| StateError(format!("state '{}': its RocksDB column family is missing", state.name)))?;
            let mut read = ReadOptions::default();
            // A full scan would evict the working set from the block cache.
            read.fill_cache(false);
            let mut iterator = snapshot.raw_iterator_cf_opt(column_family, read);
            iterator.seek_to_first();
            let mut entries: Entries = Vec::new();
            while let (Some(key), Some(value)) = (iterator.key(), iterator.value()) {
                entries.push((key.to_vec(), value.to_vec()));
                iterator.next();
            }
            iterator.status().map_err(failed("snapshot scan", state))?;
            states.push((state.name.clone(), entries));
        }
        Ok(StateSnapshot { states })
    }

    fn deferred_snapshot(&mut self) -> Result<Box<dyn DeferredSnapshot>, StateError> {
        // A sibling directory: hard links need the same file system.
        let mut name = self.dir.0.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(format!(".snapshot-{}", uuid::Uuid::new_v4().simple()));
        let dir = self.dir.0.with_file_name(name);
        let checkpoint = Checkpoint::new(&self.db).map_err(|e| StateError(format!("RocksDB checkpoint: {e}")))?;
        // Flushes the memtables first, so the checkpoint holds every write.
        checkpoint
            .create_checkpoint(&dir)
            .map_err(|e| StateError(format!("RocksDB checkpoint into {}: {e}", dir.display())))?;
        let states = self.states.iter().map(|s| (s.name.clone(), s.column_family.clone())).collect();
        let instance = self.dir.0.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Box::new(NativeSnapshot { dir: StateDir(dir), states, options: self.options.clone(), instance }))
    }

    fn restore(&mut self, snapshot: &StateSnapshot, key_groups: RangeInclusive<u16>) -> Result<(), StateError> {
        // Dropping and recreating a column family empties it at once, whatever its size; the state ids
        // stay valid since they index the names.
        for state in &self.states {
            self.db.drop_cf(&state.column_family).map_err(failed("drop column family", state))?;
            self.db.create_cf(&state.column_family, &self.options).map_err(failed("create column family", state))?;
        }
        for (name, entries) in &snapshot.states {
            let id = self.register(name)?;
            let (registered, column_family) = self.state(id)?;
            let mut batch = WriteBatch::default();
            for (key, value) in entries {
                let group = key_group_of_state_key(key).ok_or_else(|| {
                    StateError(format!("state '{name}': a key of {} bytes has no key group", key.len()))
                })?;
                if !key_groups.contains(&group) {
                    continue;
                }
                batch.put_cf(column_family, key, value);
                if batch.size_in_bytes() >= RESTORE_BATCH_BYTES {
                    self.db
                        .write_opt(std::mem::take(&mut batch), &self.write)
                        .map_err(failed("restore write", registered))?;
                }
            }
            if !batch.is_empty() {
                self.db.write_opt(batch, &self.write).map_err(failed("restore write", registered))?;
            }
        }
        Ok(())
    }
}

/// A directory removed (with everything in it) when dropped.
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %self.0.display(), "cannot remove a RocksDB state directory: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{check_contract, check_typed_states};
    use crate::state::{StateKey, StateSettings};
    use sluice_common::proto::StateBackend;

    fn small_settings() -> RocksDbSettings {
        RocksDbSettings::new(MIB, 2, 8 * MIB)
    }

    /// The native checkpoint holds exactly what was written before it (memtables included), whatever
    /// comes after, and its directory is gone once it was read.
    #[test]
    fn a_deferred_snapshot_sees_the_state_as_of_its_taking() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError(e.to_string()))?;
        let mut backend = RocksDbBackend::open(dir.path().join("db"), &small_settings())?;
        let (windows, lists) = (backend.register("windows")?, backend.register("lists")?);
        let mut key = StateKey::default();
        for i in 0..1000u32 {
            backend.put(windows, key.set_key((i % 128) as u16, &i.to_be_bytes()).as_bytes(), b"before")?;
        }
        backend.append(lists, key.set_key(3, b"l").as_bytes(), b"ab")?;
        let deferred = backend.deferred_snapshot()?;
        for i in 0..1000u32 {
            backend.put(windows, key.set_key((i % 128) as u16, &i.to_be_bytes()).as_bytes(), b"after")?;
        }
        backend.append(lists, key.set_key(3, b"l").as_bytes(), b"cd")?;
        let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
        deferred.for_each(&mut |state, _, value| {
            seen.push((state.to_string(), value.to_vec()));
            Ok(())
        })?;
        assert_eq!(seen.iter().filter(|(s, v)| s == "windows" && v == b"before").count(), 1000);
        assert_eq!(
            seen.iter().filter(|(s, _)| s == "lists").collect::<Vec<_>>(),
            vec![&("lists".to_string(), b"ab".to_vec())]
        );
        assert_eq!(seen.len(), 1001);
        let left: Vec<_> = std::fs::read_dir(dir.path()).map_err(|e| StateError(e.to_string()))?.flatten().collect();
        assert_eq!(left.len(), 1, "only the instance's own directory remains: {left:?}");
        Ok(())
    }

    #[test]
    fn rocksdb_backend_keeps_the_contract() -> Result<(), StateError> {
        let dir = tempfile::TempDir::new().map_err(|e| StateError(e.to_string()))?;
        let settings = small_settings();
        check_contract(&mut RocksDbBackend::open(dir.path().join("contract"), &settings)?)?;
        check_typed_states(&mut RocksDbBackend::open(dir.path().join("typed"), &settings)?)
    }

    #[test]
    fn the_directory_is_removed_on_drop() -> Result<(), StateError> {
        let dir = tempfile::TempDir::new().map_err(|e| StateError(e.to_string()))?;
        let path = dir.path().join("subtask");
        let mut backend = RocksDbBackend::open(path.clone(), &small_settings())?;
        let id = backend.register("values")?;
        backend.put(id, b"\0\x01key", b"value")?;
        assert!(path.join("CURRENT").exists(), "the instance lives in its directory");
        drop(backend);
        assert!(!path.exists(), "dropping the backend removes its directory");
        Ok(())
    }

    #[test]
    fn opening_an_existing_directory_fails_and_leaves_it_alone() -> Result<(), StateError> {
        let dir = tempfile::TempDir::new().map_err(|e| StateError(e.to_string()))?;
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).map_err(|e| StateError(e.to_string()))?;
        assert!(RocksDbBackend::open(path.clone(), &small_settings()).is_err());
        assert!(path.exists());
        Ok(())
    }

    #[test]
    fn settings_open_a_fresh_directory_per_subtask_attempt() -> Result<(), StateError> {
        let dir = tempfile::TempDir::new().map_err(|e| StateError(e.to_string()))?;
        let settings = StateSettings {
            default_backend: StateBackend::Heap,
            dir: dir.path().join("state"),
            rocksdb: small_settings(),
            confinement: Default::default(),
        };
        let first = settings.open_for_job(StateBackend::Rocksdb, "job/1", "window", 3)?;
        let second = settings.open_for_job(StateBackend::Rocksdb, "job/1", "window", 3)?;
        let third = settings.open(StateBackend::Rocksdb, "dedup", 0)?;
        assert_eq!(first.name(), "rocksdb");
        let names = || -> Result<Vec<String>, StateError> {
            let mut names = std::fs::read_dir(&settings.dir)
                .map_err(|e| StateError(e.to_string()))?
                .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StateError(e.to_string()))?;
            names.sort();
            Ok(names)
        };
        let opened = names()?;
        assert_eq!(opened.len(), 3, "{opened:?}");
        assert!(opened[0].starts_with("dedup-0-"), "{opened:?}");
        assert!(opened[1].starts_with("job_1-window-3-") && opened[2].starts_with("job_1-window-3-"), "{opened:?}");
        drop((first, second, third));
        assert!(names()?.is_empty());
        Ok(())
    }

    #[test]
    fn many_keys_spill_to_disk_and_read_back() -> Result<(), StateError> {
        let dir = tempfile::TempDir::new().map_err(|e| StateError(e.to_string()))?;
        // Memtables of 64 KiB: 20 000 entries of ~100 bytes are flushed to several files.
        let mut backend = RocksDbBackend::open(dir.path().join("spill"), &RocksDbSettings::new(64 * 1024, 2, MIB))?;
        let id = backend.register("values")?;
        let mut key = StateKey::default();
        let value = [7u8; 80];
        for i in 0..20_000u32 {
            key.set_key((i % 128) as u16, &i.to_be_bytes());
            backend.put(id, key.as_bytes(), &value)?;
        }
        let mut read = Vec::new();
        for i in (0..20_000u32).step_by(997) {
            key.set_key((i % 128) as u16, &i.to_be_bytes());
            assert!(backend.get(id, key.as_bytes(), &mut read)?, "key {i}");
            assert_eq!(read, value);
        }
        let snapshot = backend.snapshot()?;
        assert_eq!(snapshot.len(), 20_000);
        backend.restore(&snapshot, 0..=63)?;
        let kept = (0..20_000u32).filter(|i| i % 128 <= 63).count();
        assert_eq!(backend.snapshot()?.len(), kept, "only key groups 0..=63 are kept");
        Ok(())
    }

    #[test]
    fn prefix_successors_bound_scans() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff]), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
