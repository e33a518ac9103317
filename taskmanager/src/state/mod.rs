//! Keyed state: what keyed operators (windows, deduplication) remember per key, behind one backend trait.
//!
//! A backend stores bytes under byte keys, in named *states* (a column family each in RocksDB). Two
//! backends implement it: [`HeapBackend`] (ordered maps in memory) and [`RocksDbBackend`] (an embedded
//! RocksDB instance per subtask on local disk, for state larger than memory). Keys are laid out by
//! [`StateKey`] so that everything of one key group is contiguous and sorted first by key group:
//!
//! ```text
//! key group (u16, big-endian) | key length (u32, big-endian) | key bytes | namespace | user key
//! ```
//!
//! The key bytes are Arrow's row format of the key columns; the namespace says which window (or other
//! scope) the value belongs to; the user key addresses one entry of a map state. Because the layout is
//! ordered by key group, a contiguous key-group range — what one subtask owns, and what rescaling moves —
//! is one contiguous range of keys.
//!
//! On top of the byte interface, [`ValueState`], [`ListState`] and [`MapState`] give typed access with an
//! optional TTL ([`Ttl`]): a value written with a TTL carries its expiry time, and reads treat an expired
//! value as absent and delete it (lazy expiry, as Flink's `cleanupFullSnapshot`-free default does).
//!
//! # What a backend promises (the snapshot/restore contract checkpoints build on)
//! - Reads see every write made before them through the same backend (read-your-writes, single thread).
//! - [`KeyedStateBackend::snapshot`] captures every state as of the call. The returned [`StateSnapshot`] is
//!   independent of later writes, so it can be written out (uploaded) while processing goes on.
//! - [`KeyedStateBackend::restore`] loads a snapshot's entries, keeping only the key groups in the given
//!   range, so a snapshot taken at one parallelism restores at another. After a restore the backend holds
//!   exactly those entries; nothing from before the restore survives.
//! - Entries come out of a snapshot sorted by state, then key (so by key group).
mod heap;
#[cfg(feature = "rocksdb")]
mod rocksdb;
#[cfg(not(feature = "rocksdb"))]
#[path = "rocksdb_absent.rs"]
mod rocksdb;

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;

pub use self::rocksdb::{read_native_checkpoint, RocksDbBackend, RocksDbSettings};
pub use heap::HeapBackend;
use sluice_common::confine::Confinement;
use sluice_common::proto::StateBackend;

/// The TaskManager's state settings: the default backend, and where and how disk-backed state lives.
#[derive(Clone, Debug)]
pub struct StateSettings {
    pub default_backend: StateBackend,
    /// `<data dir>/state`: one directory per subtask (and attempt) for RocksDB.
    pub dir: PathBuf,
    /// Memtable sizes and the block cache that all RocksDB instances of this TaskManager share.
    pub rocksdb: RocksDbSettings,
    /// What jobs may read, write and reach from this TaskManager: sources and sinks check it before they
    /// open anything. It rides with the state settings because both are this TaskManager's local policy,
    /// handed to every task it runs.
    pub confinement: Arc<Confinement>,
}

impl StateSettings {
    pub fn from_config(config: &crate::config::TaskManagerConfig, confinement: Arc<Confinement>) -> Self {
        let default_backend =
            if config.state_backend == "rocksdb" { StateBackend::Rocksdb } else { StateBackend::Heap };
        let bytes = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        Self {
            default_backend,
            dir: config.data_dir.join("state"),
            rocksdb: RocksDbSettings::new(
                bytes(config.rocksdb_write_buffer_size),
                config.rocksdb_max_write_buffers,
                bytes(config.rocksdb_block_cache_size),
            ),
            confinement,
        }
    }

    /// Where snapshots bound for an object store are written before they are uploaded, and restores
    /// download to (`<state dir>/.checkpoint-spool`).
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join(".checkpoint-spool")
    }

    /// Opens the backend a keyed vertex's subtask uses; see [`StateSettings::open_for_job`].
    pub fn open(
        &self,
        chosen: StateBackend,
        vertex: &str,
        subtask: u32,
    ) -> Result<Box<dyn KeyedStateBackend>, StateError> {
        self.open_for_job(chosen, "", vertex, subtask)
    }

    /// Opens the backend a keyed vertex's subtask uses. RocksDB gets a new directory
    /// `<dir>/<job>-<vertex>-<subtask>-<uuid>` (without `<job>-` when `job` is empty), unique per call so
    /// that attempts and jobs never share one, and removed when the backend is dropped.
    pub fn open_for_job(
        &self,
        chosen: StateBackend,
        job: &str,
        vertex: &str,
        subtask: u32,
    ) -> Result<Box<dyn KeyedStateBackend>, StateError> {
        match chosen {
            StateBackend::Rocksdb => {
                let mut name = String::new();
                if !job.is_empty() {
                    name.push_str(&path_component(job));
                    name.push('-');
                }
                name.push_str(&format!("{}-{subtask}-{}", path_component(vertex), uuid::Uuid::new_v4().simple()));
                Ok(Box::new(RocksDbBackend::open(self.dir.join(name), &self.rocksdb)?))
            }
            StateBackend::Heap | StateBackend::Unspecified => Ok(Box::new(HeapBackend::default())),
        }
    }
}

/// An id made safe as (part of) a file name: other characters than ASCII letters, digits, `-`, `_` and
/// `.` become `_`, and it is cut to 64 characters.
fn path_component(id: &str) -> String {
    id.chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect()
}

/// A state backend failed (an I/O or corruption error from RocksDB, a malformed stored value).
#[derive(Debug, thiserror::Error)]
#[error("state backend: {0}")]
pub struct StateError(pub String);

/// A state declared on a backend, returned by [`KeyedStateBackend::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateId(pub u32);

/// Byte-level keyed state. One instance per subtask; single-threaded.
pub trait KeyedStateBackend: Send {
    /// "heap" or "rocksdb".
    fn name(&self) -> &'static str;
    /// Declares a state by name. Registering a name twice returns the same id.
    fn register(&mut self, name: &str) -> Result<StateId, StateError>;
    /// Copies the value under `key` into `value` (cleared first); false when there is none.
    fn get(&mut self, state: StateId, key: &[u8], value: &mut Vec<u8>) -> Result<bool, StateError>;
    /// Sets the value under `key`.
    fn put(&mut self, state: StateId, key: &[u8], value: &[u8]) -> Result<(), StateError>;
    /// Removes the value under `key`, if any.
    fn delete(&mut self, state: StateId, key: &[u8]) -> Result<(), StateError>;
    /// Appends `bytes` to the value under `key` (creating it): list state without read-modify-write.
    fn append(&mut self, state: StateId, key: &[u8], bytes: &[u8]) -> Result<(), StateError>;
    /// Visits the entries whose key starts with `prefix`, in key order, until `visit` returns false.
    fn scan_prefix(
        &mut self,
        state: StateId,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError>;
    /// A consistent copy of every state as of now.
    fn snapshot(&mut self) -> Result<StateSnapshot, StateError>;
    /// The synchronous part of a checkpoint: a consistent view of every state as of now that later writes do
    /// not change, to be read (off the task's thread) by [`DeferredSnapshot::for_each`]. The heap backend
    /// copies its maps; RocksDB flushes its memtables and hard-links its files (a native checkpoint), so
    /// this part takes milliseconds whatever the state's size.
    fn deferred_snapshot(&mut self) -> Result<Box<dyn DeferredSnapshot>, StateError>;
    /// Replaces everything with the snapshot's entries whose key group lies in `key_groups`.
    fn restore(&mut self, snapshot: &StateSnapshot, key_groups: RangeInclusive<u16>) -> Result<(), StateError>;
}

/// What reads a deferred snapshot: called with (state name, key, value) for every entry.
pub type EntryVisitor<'a> = dyn FnMut(&str, &[u8], &[u8]) -> Result<(), String> + 'a;

/// A snapshot taken by [`KeyedStateBackend::deferred_snapshot`], read once.
pub trait DeferredSnapshot: Send {
    /// Visits every entry: state by state, in key order, as `visit(state name, key, value)`. An error from
    /// `visit` stops the walk and is returned.
    fn for_each(self: Box<Self>, visit: &mut EntryVisitor<'_>) -> Result<(), StateError>;

    /// The files of a RocksDB native checkpoint, when the snapshot is one: what an incremental snapshot
    /// stores instead of the entries.
    fn native(&self) -> Option<NativeFiles<'_>> {
        None
    }
}

/// A RocksDB native checkpoint's directory, the id of the instance it comes from (its SST file names are
/// unique within the instance, and immutable), and its (state name, column family) pairs.
pub struct NativeFiles<'a> {
    pub dir: &'a std::path::Path,
    pub instance: &'a str,
    pub states: &'a [(String, String)],
}

/// A deferred snapshot that is a copy in memory (the heap backend's).
pub struct CopiedSnapshot(pub StateSnapshot);

impl DeferredSnapshot for CopiedSnapshot {
    fn for_each(self: Box<Self>, visit: &mut EntryVisitor<'_>) -> Result<(), StateError> {
        for (name, entries) in &self.0.states {
            for (key, value) in entries {
                visit(name, key, value).map_err(StateError)?;
            }
        }
        Ok(())
    }
}

/// The entries of one state as (full key, value), sorted by key.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every entry of every state, as of a [`KeyedStateBackend::snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateSnapshot {
    /// (state name, entries sorted by key).
    pub states: Vec<(String, Entries)>,
}

impl StateSnapshot {
    /// The number of entries over all states.
    pub fn len(&self) -> usize {
        self.states.iter().map(|(_, entries)| entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key group a full state key starts with.
pub fn key_group_of_state_key(key: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*key.first()?, *key.get(1)?]))
}

/// Builds full state keys (see the module docs for the layout), reusing one buffer.
#[derive(Default)]
pub struct StateKey {
    bytes: Vec<u8>,
    /// Length of key group + key length + key: where the namespace starts.
    key_end: usize,
}

impl StateKey {
    /// Starts a key: key group and the key's bytes.
    pub fn set_key(&mut self, key_group: u16, key: &[u8]) -> &mut Self {
        self.bytes.clear();
        self.bytes.extend_from_slice(&key_group.to_be_bytes());
        self.bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
        self.bytes.extend_from_slice(key);
        self.key_end = self.bytes.len();
        self
    }

    /// Sets the namespace after the key, replacing any earlier namespace and user key.
    pub fn set_namespace(&mut self, namespace: &[u8]) -> &mut Self {
        self.bytes.truncate(self.key_end);
        self.bytes.extend_from_slice(namespace);
        self
    }

    /// Takes a full key as stored (key group, key, namespace); a malformed one becomes an empty key.
    pub fn set_full(&mut self, full: &[u8]) -> &mut Self {
        self.bytes.clear();
        self.bytes.extend_from_slice(full);
        self.key_end = split_state_key(full).map_or(full.len(), |(_, key, _)| 6 + key.len());
        self
    }

    /// The key group and key only: the prefix of everything stored for this key.
    pub fn key_prefix(&self) -> &[u8] {
        &self.bytes[..self.key_end]
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Splits a full state key into (key group, key bytes, rest = namespace and user key).
pub fn split_state_key(full: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let key_group = key_group_of_state_key(full)?;
    let length = u32::from_be_bytes(full.get(2..6)?.try_into().ok()?) as usize;
    let key = full.get(6..6 + length)?;
    Some((key_group, key, &full[6 + length..]))
}

/// A time as 8 bytes whose byte order is time order (sign-flipped big-endian): for namespaces that scan in
/// time order (windows, a join's rows).
pub fn time_bytes(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// The time of [`time_bytes`] at the start of `bytes`.
pub fn time_from_bytes(bytes: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// The elements of a [`ListState`] value (each length-prefixed), borrowed from it.
pub fn list_elements(value: &[u8]) -> Result<Vec<&[u8]>, StateError> {
    let cut = || StateError("a list element is cut short".to_string());
    let mut elements = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (length, tail) = rest.split_first_chunk::<4>().ok_or_else(cut)?;
        let length = u32::from_be_bytes(*length) as usize;
        elements.push(tail.get(..length).ok_or_else(cut)?);
        rest = &tail[length..];
    }
    Ok(elements)
}

/// Time to live of state values, in the clock the operator passes to reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl {
    pub millis: i64,
}

/// Encodes `expires_at` before the payload when a TTL is set.
fn with_expiry(ttl: Option<Ttl>, now: i64, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if let Some(ttl) = ttl {
        out.extend_from_slice(&now.saturating_add(ttl.millis).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// The payload of a stored value, or None when it expired at `now`.
fn live_payload(ttl: Option<Ttl>, now: i64, stored: &[u8]) -> Result<Option<&[u8]>, StateError> {
    let Some(_) = ttl else { return Ok(Some(stored)) };
    let (expiry, payload) = stored
        .split_first_chunk::<8>()
        .ok_or_else(|| StateError(format!("stored value of {} bytes has no expiry time", stored.len())))?;
    Ok((i64::from_be_bytes(*expiry) > now).then_some(payload))
}

/// One value per key (and namespace).
pub struct ValueState {
    id: StateId,
    ttl: Option<Ttl>,
    buffer: Vec<u8>,
    encoded: Vec<u8>,
}

impl ValueState {
    pub fn new(backend: &mut dyn KeyedStateBackend, name: &str, ttl: Option<Ttl>) -> Result<Self, StateError> {
        Ok(Self { id: backend.register(name)?, ttl, buffer: Vec::new(), encoded: Vec::new() })
    }

    /// The live value under `key` at time `now`; an expired value is deleted and reads as absent.
    pub fn get(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        key: &[u8],
        now: i64,
    ) -> Result<Option<&[u8]>, StateError> {
        if !backend.get(self.id, key, &mut self.buffer)? {
            return Ok(None);
        }
        if live_payload(self.ttl, now, &self.buffer)?.is_none() {
            backend.delete(self.id, key)?;
            return Ok(None);
        }
        live_payload(self.ttl, now, &self.buffer)
    }

    /// Sets the value, restarting its TTL at `now`.
    pub fn put(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        key: &[u8],
        value: &[u8],
        now: i64,
    ) -> Result<(), StateError> {
        with_expiry(self.ttl, now, value, &mut self.encoded);
        backend.put(self.id, key, &self.encoded)
    }

    pub fn clear(&mut self, backend: &mut dyn KeyedStateBackend, key: &[u8]) -> Result<(), StateError> {
        backend.delete(self.id, key)
    }
}

/// A list of byte elements per key, appended without reading it back.
pub struct ListState {
    id: StateId,
    buffer: Vec<u8>,
    element: Vec<u8>,
}

impl ListState {
    pub fn new(backend: &mut dyn KeyedStateBackend, name: &str) -> Result<Self, StateError> {
        Ok(Self { id: backend.register(name)?, buffer: Vec::new(), element: Vec::new() })
    }

    pub fn add(&mut self, backend: &mut dyn KeyedStateBackend, key: &[u8], element: &[u8]) -> Result<(), StateError> {
        self.element.clear();
        self.element.extend_from_slice(&(element.len() as u32).to_be_bytes());
        self.element.extend_from_slice(element);
        backend.append(self.id, key, &self.element)
    }

    /// Appends `elements` under `key`, in order, with one write.
    pub fn add_all<'a>(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        key: &[u8],
        elements: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), StateError> {
        self.element.clear();
        for element in elements {
            self.element.extend_from_slice(&(element.len() as u32).to_be_bytes());
            self.element.extend_from_slice(element);
        }
        backend.append(self.id, key, &self.element)
    }

    /// The elements under `key`, in the order added.
    pub fn get(&mut self, backend: &mut dyn KeyedStateBackend, key: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        Ok(self.elements(backend, key)?.into_iter().map(<[u8]>::to_vec).collect())
    }

    /// The elements under `key`, in the order added, borrowed from the state's read buffer (no copy each).
    pub fn elements(&mut self, backend: &mut dyn KeyedStateBackend, key: &[u8]) -> Result<Vec<&[u8]>, StateError> {
        if !backend.get(self.id, key, &mut self.buffer)? {
            return Ok(Vec::new());
        }
        list_elements(&self.buffer)
    }

    pub fn clear(&mut self, backend: &mut dyn KeyedStateBackend, key: &[u8]) -> Result<(), StateError> {
        backend.delete(self.id, key)
    }
}

/// A map per key: entries addressed by a user key after the key (and namespace).
pub struct MapState {
    id: StateId,
    ttl: Option<Ttl>,
    full: Vec<u8>,
    buffer: Vec<u8>,
    encoded: Vec<u8>,
}

impl MapState {
    pub fn new(backend: &mut dyn KeyedStateBackend, name: &str, ttl: Option<Ttl>) -> Result<Self, StateError> {
        Ok(Self { id: backend.register(name)?, ttl, full: Vec::new(), buffer: Vec::new(), encoded: Vec::new() })
    }

    fn entry_key(&mut self, key: &[u8], user_key: &[u8]) {
        self.full.clear();
        self.full.extend_from_slice(key);
        self.full.extend_from_slice(user_key);
    }

    pub fn get(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        key: &[u8],
        user_key: &[u8],
        now: i64,
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.entry_key(key, user_key);
        if !backend.get(self.id, &self.full, &mut self.buffer)? {
            return Ok(None);
        }
        match live_payload(self.ttl, now, &self.buffer)? {
            Some(payload) => Ok(Some(payload.to_vec())),
            None => {
                backend.delete(self.id, &self.full)?;
                Ok(None)
            }
        }
    }

    pub fn put(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
        now: i64,
    ) -> Result<(), StateError> {
        self.entry_key(key, user_key);
        with_expiry(self.ttl, now, value, &mut self.encoded);
        backend.put(self.id, &self.full, &self.encoded)
    }

    pub fn remove(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        key: &[u8],
        user_key: &[u8],
    ) -> Result<(), StateError> {
        self.entry_key(key, user_key);
        backend.delete(self.id, &self.full)
    }

    /// The live entries under `key` as (user key, value), in user-key order. Expired entries are skipped
    /// (and deleted).
    pub fn entries(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        key: &[u8],
        now: i64,
    ) -> Result<Entries, StateError> {
        let ttl = self.ttl;
        let mut live = Vec::new();
        let mut expired = Vec::new();
        let mut failure = None;
        backend.scan_prefix(self.id, key, &mut |full, stored| match live_payload(ttl, now, stored) {
            Ok(Some(payload)) => {
                live.push((full[key.len()..].to_vec(), payload.to_vec()));
                true
            }
            Ok(None) => {
                expired.push(full.to_vec());
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        for full in expired {
            backend.delete(self.id, &full)?;
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: u16, k: &str, namespace: &[u8]) -> Vec<u8> {
        let mut key = StateKey::default();
        key.set_key(group, k.as_bytes()).set_namespace(namespace);
        key.as_bytes().to_vec()
    }

    /// The contract, run against every backend.
    pub(crate) fn check_contract(backend: &mut dyn KeyedStateBackend) -> Result<(), StateError> {
        let counts = backend.register("counts")?;
        assert_eq!(backend.register("counts")?, counts, "registering twice gives the same state");
        let lists = backend.register("lists")?;
        let mut value = Vec::new();
        assert!(!backend.get(counts, &key(3, "a", b""), &mut value)?);
        backend.put(counts, &key(3, "a", b""), b"1")?;
        backend.put(counts, &key(3, "a", b""), b"2")?;
        assert!(backend.get(counts, &key(3, "a", b""), &mut value)?);
        assert_eq!(value, b"2");
        backend.put(counts, &key(90, "b", b""), b"9")?;
        backend.append(lists, &key(3, "a", b""), b"x")?;
        backend.append(lists, &key(3, "a", b""), b"y")?;
        assert!(backend.get(lists, &key(3, "a", b""), &mut value)?);
        assert_eq!(value, b"xy");

        let snapshot = backend.snapshot()?;
        backend.put(counts, &key(3, "a", b""), b"changed after the snapshot")?;
        assert_eq!(snapshot.len(), 3, "{snapshot:?}");

        // Restoring key groups 0..=63 keeps "a" (group 3) and drops "b" (group 90).
        backend.restore(&snapshot, 0..=63)?;
        assert!(backend.get(counts, &key(3, "a", b""), &mut value)?);
        assert_eq!(value, b"2", "the snapshot was not affected by a later write");
        assert!(!backend.get(counts, &key(90, "b", b""), &mut value)?);

        // Prefix scans see one key's namespaces in order, and nothing of other keys.
        let windows = backend.register("windows")?;
        for (k, start) in [("k", 30i64), ("k", 10), ("kk", 20), ("k", 20)] {
            backend.put(windows, &key(1, k, &start.to_be_bytes()), k.as_bytes())?;
        }
        let mut prefix = StateKey::default();
        prefix.set_key(1, b"k");
        let mut seen = Vec::new();
        backend.scan_prefix(windows, prefix.key_prefix(), &mut |full, _| {
            let (_, _, namespace) = split_state_key(full).expect("a well-formed key");
            seen.push(i64::from_be_bytes(namespace.try_into().expect("8 bytes")));
            true
        })?;
        assert_eq!(seen, [10, 20, 30]);
        backend.delete(windows, &key(1, "k", &20i64.to_be_bytes()))?;
        let mut remaining = 0;
        backend.scan_prefix(windows, prefix.key_prefix(), &mut |_, _| {
            remaining += 1;
            true
        })?;
        assert_eq!(remaining, 2);
        Ok(())
    }

    pub(crate) fn check_typed_states(backend: &mut dyn KeyedStateBackend) -> Result<(), StateError> {
        let mut seen = ValueState::new(backend, "seen", Some(Ttl { millis: 100 }))?;
        let k = key(7, "id-1", b"");
        seen.put(backend, &k, b"v", 1_000)?;
        assert_eq!(seen.get(backend, &k, 1_099)?, Some(&b"v"[..]), "alive before its TTL ends");
        assert_eq!(seen.get(backend, &k, 1_100)?, None, "expired at write time + TTL");
        assert_eq!(seen.get(backend, &k, 1_000)?, None, "an expired value is deleted on read");

        let mut list = ListState::new(backend, "buffer")?;
        list.add(backend, &k, b"first")?;
        list.add(backend, &k, b"")?;
        list.add(backend, &k, b"third")?;
        assert_eq!(list.get(backend, &k)?, vec![b"first".to_vec(), Vec::new(), b"third".to_vec()]);

        let mut map = MapState::new(backend, "by_time", None)?;
        map.put(backend, &k, &20i64.to_be_bytes(), b"b", 0)?;
        map.put(backend, &k, &10i64.to_be_bytes(), b"a", 0)?;
        map.put(backend, &key(7, "id-2", b""), &5i64.to_be_bytes(), b"other key", 0)?;
        let entries = map.entries(backend, &k, 0)?;
        assert_eq!(
            entries,
            vec![(10i64.to_be_bytes().to_vec(), b"a".to_vec()), (20i64.to_be_bytes().to_vec(), b"b".to_vec())]
        );
        map.remove(backend, &k, &10i64.to_be_bytes())?;
        assert_eq!(map.get(backend, &k, &10i64.to_be_bytes(), 0)?, None);
        Ok(())
    }

    #[test]
    fn heap_backend_keeps_the_contract() -> Result<(), StateError> {
        check_contract(&mut HeapBackend::default())?;
        check_typed_states(&mut HeapBackend::default())
    }

    #[test]
    fn state_keys_split_back_into_their_parts() {
        let full = key(513, "word", b"ns");
        assert_eq!(split_state_key(&full), Some((513, &b"word"[..], &b"ns"[..])));
        assert_eq!(split_state_key(&full[..5]), None, "a truncated key is refused, not misread");
    }
}
