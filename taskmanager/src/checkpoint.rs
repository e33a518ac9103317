//! A task's side of checkpoints: the commands its TaskManager forwards to it, how a snapshot file is
//! written and read, and how a task reports the outcome to the JobManager.
//!
//! A task's snapshot is one file, `chk-N/<chain>-<subtask>.snapshot` under the job's checkpoint directory,
//! written as a stream so that keyed state never has to be in memory at once:
//!
//! ```text
//! "SLUICESN" | format version (u32 BE)
//! record*    : kind (u8) | length (u32 BE) | protobuf body
//!              kind 1: TaskSnapshot without keyed entries (source position, operator state), once, first
//!              kind 2: KeyedChunk (up to CHUNK_ENTRIES entries of one state of one operator)
//! trailer    : kind 0xFF | records (u64 BE) | CRC-32C of every byte before the trailer (u32 BE)
//! ```
//!
//! The file is written under a temporary name, synced, then renamed (and the directory synced, so the
//! rename survives a crash), so a reader never sees half a file;
//! the trailer's count and checksum catch one that was truncated or damaged afterwards. A task writes it
//! after it has sent the barrier on (the asynchronous part): processing goes on while the bytes go out.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::record_batch::RecordBatch;
use prost::Message;
use sluice_common::proto::{
    AcknowledgeCheckpointRequest, DeclineCheckpointRequest, KeyedChunk, KeyedStateSnapshot, OperatorSnapshot,
    RocksDbCheckpoint, RocksDbFile, TaskSnapshot,
};

use sluice_common::checkpoint_layout;
use sluice_common::ids::CheckpointId;
use sluice_common::storage::Storage;

use crate::state::{DeferredSnapshot, Entries, StateSnapshot};

const MAGIC: &[u8; 8] = b"SLUICESN";
const FORMAT_VERSION: u32 = 2;
const HEADER_LEN: usize = 8 + 4;
const TRAILER_LEN: usize = 1 + 8 + 4;
const KIND_HEADER: u8 = 1;
const KIND_KEYED: u8 = 2;
const KIND_TRAILER: u8 = 0xFF;
/// Keyed entries per chunk record, and the bytes after which a chunk is cut anyway.
const CHUNK_ENTRIES: usize = 16 * 1024;
const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// The buffer between a snapshot file and its reader or writer.
const SNAPSHOT_IO_BUFFER_BYTES: usize = 1 << 20;
/// Checkpoint commands (triggers, completions) a task may have queued; more are dropped (a dropped trigger
/// lets the checkpoint expire, a dropped completion only delays a commit to the next one).
pub const CHECKPOINT_COMMANDS_MAX: usize = 64;
/// A record longer than this is corrupt (chunks stay near CHUNK_BYTES; one entry may exceed it).
const RECORD_BYTES_MAX: usize = 1 << 30;

/// What the TaskManager tells a running task about checkpoints.
#[derive(Debug)]
pub enum CheckpointCommand {
    /// Source tasks only: take checkpoint `id` now and send its barrier downstream; with `stop`, emit
    /// nothing after it.
    Trigger { id: u64, timestamp_ms: u64, stop: bool },
    /// Checkpoint `id` is complete (its metadata is stored); `done` is answered once the task's operators
    /// have committed what they pre-committed for it.
    Complete { id: u64, done: Option<tokio::sync::oneshot::Sender<()>> },
}

/// What a task tells the JobManager about its part of a checkpoint.
#[derive(Clone, Debug)]
pub enum CheckpointOutcome {
    Acknowledge(AcknowledgeCheckpointRequest),
    Decline(DeclineCheckpointRequest),
}

/// Sends a task's checkpoint outcomes to the JobManager (the control runtime does the RPC).
pub type CheckpointReporter = std::sync::Arc<dyn Fn(CheckpointOutcome) + Send + Sync>;

/// A snapshot file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

// The storage layout's names are the JobManager's too: one definition in sluice_common.
pub use sluice_common::checkpoint_layout::{snapshot_file_name, SHARED_DIR};

/// The SST files a task's RocksDB instances stored under `shared/`, by their name there. A snapshot
/// references again only the files of the task's last completed checkpoint (the JobManager keeps those
/// while a retained checkpoint or the next one may use them); a checkpoint's own set waits for its
/// completion.
#[derive(Debug, Default)]
pub struct SharedFiles {
    confirmed: HashSet<String>,
    pending: BTreeMap<u64, HashSet<String>>,
}

impl SharedFiles {
    /// Checkpoint `id` completed: its files may be referenced from now on.
    pub fn completed(&mut self, id: u64) {
        if let Some(files) = self.pending.remove(&id) {
            self.confirmed = files;
        }
        self.pending.retain(|&pending, _| pending > id);
    }
}

/// A task's snapshot as stored: the file, and the shared files it references and uploaded.
pub struct Stored {
    pub written: Written,
    /// Bytes this checkpoint wrote: the snapshot file and the files it uploaded (not those it reuses).
    pub uploaded_bytes: u64,
    pub shared: Vec<String>,
    pub uploaded_shared: Vec<String>,
}

/// Stores a task's part of checkpoint `id` under the job's location `job`: RocksDB native checkpoints as
/// files (SST files under `shared/` unless an earlier completed checkpoint stored them; the rest under
/// `chk-N/`), then the snapshot file `name`: straight into a local directory, or into `spool` first and
/// uploaded. Blocking (call it on a blocking thread); `runtime` runs the uploads.
#[allow(clippy::too_many_arguments)]
pub fn store_snapshot(
    job: &Storage,
    id: u64,
    spool: &Path,
    name: &str,
    mut parts: SnapshotParts,
    shared: &Mutex<SharedFiles>,
    runtime: &tokio::runtime::Handle,
) -> Result<Stored, String> {
    let chk = job.child(&checkpoint_layout::checkpoint_dir_name(CheckpointId(id)));
    let shared_dir = job.child(SHARED_DIR);
    let confirmed = shared.lock().unwrap_or_else(|p| p.into_inner()).confirmed.clone();
    let (mut referenced, mut uploaded) = (Vec::new(), Vec::new());
    let (mut uploaded_bytes, mut native_bytes) = (0u64, Vec::new());
    let mut streamed = Vec::new();
    for (operator, deferred) in parts.keyed {
        let Some(native) = deferred.native() else {
            streamed.push((operator, deferred));
            continue;
        };
        let mut checkpoint = RocksDbCheckpoint {
            state_names: native.states.iter().map(|(n, _)| n.clone()).collect(),
            column_families: native.states.iter().map(|(_, c)| c.clone()).collect(),
            files: Vec::new(),
        };
        let listing = std::fs::read_dir(native.dir).map_err(|e| format!("{}: {e}", native.dir.display()))?;
        let mut total = 0u64;
        for entry in listing {
            let entry = entry.map_err(|e| format!("{}: {e}", native.dir.display()))?;
            let path = entry.path();
            let file = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
            total += size;
            if file.ends_with(".sst") {
                let shared_name = format!("{}-{file}", native.instance);
                if !confirmed.contains(&shared_name) && !uploaded.contains(&shared_name) {
                    runtime.block_on(shared_dir.upload(&shared_name, &path)).map_err(|e| e.to_string())?;
                    uploaded.push(shared_name.clone());
                    uploaded_bytes += size;
                }
                referenced.push(shared_name.clone());
                checkpoint.files.push(RocksDbFile { name: file, shared: shared_name, private: String::new(), size });
            } else {
                let private = format!("{name}.rocksdb-{operator}/{file}");
                runtime.block_on(chk.upload(&private, &path)).map_err(|e| e.to_string())?;
                uploaded_bytes += size;
                checkpoint.files.push(RocksDbFile { name: file, shared: String::new(), private, size });
            }
        }
        let slot = parts.header.operators.get_mut(operator as usize).ok_or("a snapshot of an unknown operator")?;
        slot.rocksdb = Some(checkpoint);
        native_bytes.push((operator, total));
        // Dropping `deferred` removes the native checkpoint's directory.
    }
    parts.keyed = streamed;
    let mut written = if let Some(dir) = chk.local_dir() {
        write_snapshot(dir, name, parts).map_err(|e| e.to_string())?
    } else {
        let local = format!("{name}.{}", uuid::Uuid::new_v4().simple());
        let written = write_snapshot(spool, &local, parts).map_err(|e| e.to_string())?;
        let path = spool.join(&local);
        let stored = runtime.block_on(chk.upload(name, &path));
        let _ = std::fs::remove_file(&path);
        stored.map_err(|e| e.to_string())?;
        written
    };
    uploaded_bytes += written.size;
    written.keyed_bytes.extend(native_bytes);
    shared.lock().unwrap_or_else(|p| p.into_inner()).pending.insert(id, referenced.iter().cloned().collect());
    Ok(Stored { written, uploaded_bytes, shared: referenced, uploaded_shared: uploaded })
}

/// What a snapshot file holds: the task's header (positions, operator state) and, per operator index, the
/// deferred keyed state to stream into it.
pub struct SnapshotParts {
    pub header: TaskSnapshot,
    pub keyed: Vec<(u32, Box<dyn DeferredSnapshot>)>,
}

/// A snapshot file as written: its size, and the bytes of keyed entries per operator index.
pub struct Written {
    pub size: u64,
    pub keyed_bytes: Vec<(u32, u64)>,
}

/// Wraps the file, counting and checksumming every byte written through it.
struct Checksummed<'a, W> {
    inner: W,
    crc: crc::Digest<'a, u32, CrcTable>,
    bytes: u64,
}

impl<W: std::io::Write> Checksummed<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        self.inner.write_all(bytes)
    }

    fn record(&mut self, kind: u8, body: &[u8]) -> std::io::Result<()> {
        let length = u32::try_from(body.len()).map_err(|_| std::io::Error::other("a record over 4 GiB"))?;
        self.put(&[kind])?;
        self.put(&length.to_be_bytes())?;
        self.put(body)
    }
}

/// Writes a task's snapshot as `dir/name` (creating `dir`), streaming its keyed state, durably and
/// atomically.
pub fn write_snapshot(dir: &Path, name: &str, parts: SnapshotParts) -> Result<Written, SnapshotError> {
    let path = dir.join(name);
    sluice_common::durable::create_dir_all_durably(dir)
        .map_err(|source| SnapshotError::Io { path: path.clone(), source })?;
    let temporary = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let written = write_parts(&temporary, parts).and_then(|written| {
        sluice_common::durable::rename_durably(&temporary, &path)
            .map_err(|source| SnapshotError::Io { path: path.clone(), source })?;
        Ok(written)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Adds a keyed entry to `chunk`, writing the chunk out first when it is full or of another state.
struct ChunkWriter<'a, 'c, W: std::io::Write> {
    out: &'a mut Checksummed<'c, W>,
    chunk: KeyedChunk,
    chunk_bytes: usize,
    records: u64,
    total: u64,
}

impl<W: std::io::Write> ChunkWriter<'_, '_, W> {
    fn add(&mut self, state: &str, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        if self.chunk.name != state || self.chunk.keys.len() >= CHUNK_ENTRIES || self.chunk_bytes >= CHUNK_BYTES {
            self.flush()?;
            state.clone_into(&mut self.chunk.name);
        }
        self.chunk_bytes += key.len() + value.len();
        self.total += (key.len() + value.len()) as u64;
        self.chunk.keys.push(key.to_vec());
        self.chunk.values.push(value.to_vec());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.chunk.keys.is_empty() {
            self.out.record(KIND_KEYED, &self.chunk.encode_to_vec())?;
            self.records += 1;
            self.chunk.keys.clear();
            self.chunk.values.clear();
        }
        self.chunk_bytes = 0;
        Ok(())
    }
}

fn write_parts(path: &Path, parts: SnapshotParts) -> Result<Written, SnapshotError> {
    let io = |source| SnapshotError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::create(path).map_err(io)?;
    let inner = std::io::BufWriter::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, file);
    let mut out = Checksummed { inner, crc: CRC32C.digest(), bytes: 0 };
    out.put(MAGIC).map_err(io)?;
    out.put(&FORMAT_VERSION.to_be_bytes()).map_err(io)?;
    out.record(KIND_HEADER, &parts.header.encode_to_vec()).map_err(io)?;
    let mut records: u64 = 1;
    let mut keyed_bytes = Vec::new();
    for (operator, deferred) in parts.keyed {
        let chunk = KeyedChunk { operator, ..Default::default() };
        let mut writer = ChunkWriter { out: &mut out, chunk, chunk_bytes: 0, records: 0, total: 0 };
        let mut failure: Option<std::io::Error> = None;
        let walked = deferred.for_each(&mut |state, key, value| {
            writer.add(state, key, value).map_err(|e| {
                let message = e.to_string();
                failure = Some(e);
                message
            })
        });
        if let Some(e) = failure {
            return Err(io(e));
        }
        walked.map_err(|e| SnapshotError::Corrupt { path: path.to_path_buf(), reason: format!("keyed state: {e}") })?;
        writer.flush().map_err(io)?;
        records += writer.records;
        keyed_bytes.push((operator, writer.total));
    }
    let crc = std::mem::replace(&mut out.crc, CRC32C.digest()).finalize();
    out.put(&[KIND_TRAILER]).map_err(io)?;
    out.put(&records.to_be_bytes()).map_err(io)?;
    out.put(&crc.to_be_bytes()).map_err(io)?;
    let size = out.bytes;
    let file = out.inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(Written { size, keyed_bytes })
}

/// Reads a snapshot file written by [`write_snapshot`], checking its header, records, count and checksum,
/// and returns it whole (keyed chunks gathered into their operators).
pub fn read_snapshot(path: &Path) -> Result<TaskSnapshot, SnapshotError> {
    read_snapshot_keeping(path, &|_| true)
}

/// [`read_snapshot`], keeping only the keyed entries whose full key `keep` accepts (a restoring subtask's
/// key groups): the file is read as a stream, so memory holds what is kept, not the whole file.
pub fn read_snapshot_keeping(path: &Path, keep: &dyn Fn(&[u8]) -> bool) -> Result<TaskSnapshot, SnapshotError> {
    use std::io::Read;
    let corrupt = |reason: String| SnapshotError::Corrupt { path: path.to_path_buf(), reason };
    let io = |source| SnapshotError::Io { path: path.to_path_buf(), source };
    // First pass: the header, then the checksum over everything before the trailer, so that damage anywhere
    // is reported as such before any record is decoded.
    let count = verify(path)?;
    let file = std::fs::File::open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let body = length.saturating_sub(TRAILER_LEN as u64);
    let mut input = std::io::BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, file).take(body);
    let mut header = [0u8; HEADER_LEN];
    input.read_exact(&mut header).map_err(io)?;
    let mut snapshot: Option<TaskSnapshot> = None;
    let mut records = 0u64;
    let mut body = Vec::new();
    loop {
        let mut kind = [0u8; 1];
        if input.read(&mut kind).map_err(io)? == 0 {
            break;
        }
        let mut length = [0u8; 4];
        input.read_exact(&mut length).map_err(|_| corrupt(format!("record {records} is cut")))?;
        let length = u32::from_be_bytes(length) as usize;
        if length > RECORD_BYTES_MAX {
            return Err(corrupt(format!("record {records} claims {length} bytes")));
        }
        // A length beyond the rest of the file is damage: refused before anything is allocated for it (a
        // 30-byte file announcing a 1 GiB record must not cost 1 GiB).
        if length as u64 > input.limit() {
            return Err(corrupt(format!(
                "record {records} is cut: it claims {length} bytes, {} are left",
                input.limit()
            )));
        }
        body.resize(length, 0);
        input.read_exact(&mut body).map_err(|_| corrupt(format!("record {records} is cut")))?;
        match (kind[0], snapshot.as_mut()) {
            (KIND_HEADER, None) => {
                let decoded =
                    TaskSnapshot::decode(body.as_slice()).map_err(|e| corrupt(format!("cannot decode: {e}")))?;
                snapshot = Some(decoded);
            }
            (KIND_KEYED, Some(header)) => {
                let chunk = KeyedChunk::decode(body.as_slice()).map_err(|e| corrupt(format!("cannot decode: {e}")))?;
                if chunk.keys.len() != chunk.values.len() {
                    return Err(corrupt(format!("a chunk of state '{}' has unequal keys and values", chunk.name)));
                }
                let operators = header.operators.len();
                let operator = header
                    .operators
                    .get_mut(chunk.operator as usize)
                    .ok_or_else(|| corrupt(format!("a chunk names operator {} of {operators}", chunk.operator)))?;
                let at = match operator.keyed.iter().position(|s| s.name == chunk.name) {
                    Some(at) => at,
                    None => {
                        operator.keyed.push(KeyedStateSnapshot { name: chunk.name.clone(), ..Default::default() });
                        operator.keyed.len() - 1
                    }
                };
                let state = &mut operator.keyed[at];
                for (key, value) in chunk.keys.into_iter().zip(chunk.values) {
                    if keep(&key) {
                        state.keys.push(key);
                        state.values.push(value);
                    }
                }
            }
            (kind, _) => return Err(corrupt(format!("unexpected record of kind {kind} (record {records})"))),
        }
        records += 1;
    }
    if records != count {
        return Err(corrupt(format!("{records} records where the trailer says {count}")));
    }
    snapshot.ok_or_else(|| corrupt("no header record".into()))
}

/// Checks a snapshot file's header and its trailer's checksum (streaming); returns the record count.
fn verify(path: &Path) -> Result<u64, SnapshotError> {
    use std::io::Read;
    let corrupt = |reason: String| SnapshotError::Corrupt { path: path.to_path_buf(), reason };
    let io = |source| SnapshotError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    if length < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(corrupt("not a Sluice snapshot file (bad header)".into()));
    }
    let mut input = std::io::BufReader::with_capacity(SNAPSHOT_IO_BUFFER_BYTES, file);
    let mut header = [0u8; HEADER_LEN];
    input.read_exact(&mut header).map_err(io)?;
    if &header[..8] != MAGIC {
        return Err(corrupt("not a Sluice snapshot file (bad header)".into()));
    }
    let version = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!("snapshot format version {version}; this build reads {FORMAT_VERSION}")));
    }
    let mut crc = CRC32C.digest();
    crc.update(&header);
    let mut remaining = length - (HEADER_LEN + TRAILER_LEN) as u64;
    let mut buffer = vec![0u8; SNAPSHOT_IO_BUFFER_BYTES];
    while remaining > 0 {
        let n = buffer.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        input.read_exact(&mut buffer[..n]).map_err(io)?;
        crc.update(&buffer[..n]);
        remaining -= n as u64;
    }
    let mut trailer = [0u8; TRAILER_LEN];
    input.read_exact(&mut trailer).map_err(io)?;
    if trailer[0] != KIND_TRAILER {
        return Err(corrupt("truncated: the file does not end with its trailer".into()));
    }
    if crc.finalize() != u32::from_be_bytes([trailer[9], trailer[10], trailer[11], trailer[12]]) {
        return Err(corrupt("checksum mismatch: the file is truncated or was damaged after it was written".into()));
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&trailer[1..9]);
    Ok(u64::from_be_bytes(count))
}

/// A backend snapshot as messages (keys and values moved, not copied).
pub fn to_messages(snapshot: StateSnapshot) -> Vec<KeyedStateSnapshot> {
    snapshot
        .states
        .into_iter()
        .map(|(name, entries)| {
            let (keys, values) = entries.into_iter().unzip();
            KeyedStateSnapshot { name, keys, values }
        })
        .collect()
}

/// Messages back into a backend snapshot. A state whose key and value counts differ is corrupt.
pub fn from_messages(states: Vec<KeyedStateSnapshot>) -> Result<StateSnapshot, String> {
    let mut out = StateSnapshot::default();
    for state in states {
        if state.keys.len() != state.values.len() {
            return Err(format!(
                "state '{}' has {} keys but {} values",
                state.name,
                state.keys.len(),
                state.values.len()
            ));
        }
        out.states.push((state.name, state.keys.into_iter().zip(state.values).collect()));
    }
    Ok(out)
}

/// The keyed states of several snapshots of one vertex (one per subtask that took them), merged by state
/// name: what a subtask restores from, keeping its own key groups.
pub fn merge_keyed(snapshots: &[&OperatorSnapshot]) -> Result<StateSnapshot, String> {
    let mut merged: Vec<(String, Entries)> = Vec::new();
    for snapshot in snapshots {
        for (name, entries) in from_messages(snapshot.keyed.clone())?.states {
            match merged.iter_mut().find(|(n, _)| *n == name) {
                Some((_, all)) => all.extend(entries),
                None => merged.push((name, entries)),
            }
        }
    }
    for (_, entries) in &mut merged {
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(StateSnapshot { states: merged })
}

/// Arrow batches from an IPC stream a snapshot holds (records an operator had buffered).
pub fn decode_batches(bytes: &[u8]) -> Result<Vec<RecordBatch>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    // Arrow's IPC reader panics on some malformed schemas: damaged state is an error, not a panic. And the
    // push-based decoder, over the bytes in hand, only slices what is there: the pull-based `StreamReader`
    // allocated whatever body length a message announced, and an allocation the allocator refuses aborts
    // the process (found by the `snapshot` fuzz target).
    sluice_common::untrusted::catch_panic(|| {
        let mut buffer = Buffer::from(bytes.to_vec());
        let mut decoder = StreamDecoder::new();
        let mut batches = Vec::new();
        while let Some(batch) = decoder.decode(&mut buffer).map_err(|e| format!("buffered records: {e}"))? {
            batches.push(batch);
        }
        decoder.finish().map_err(|e| format!("buffered records: {e}"))?;
        Ok(batches)
    })
    .unwrap_or_else(|panic| Err(format!("buffered records: malformed IPC stream: {panic}")))
}

/// CRC-32C (Castagnoli), as iSCSI and ext4 use it, computed sixteen bytes a step: the byte-at-a-time table
/// (the crate's default) took 8 % of a TaskManager's CPU writing heap snapshots every second (Nexmark q5).
const CRC32C: crc::Crc<u32, CrcTable> = crc::Crc::<u32, CrcTable>::new(&crc::CRC_32_ISCSI);
type CrcTable = crc::Table<16>;

fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

/// Rewrites the CRC in the trailer of a whole snapshot file held in memory so that it matches the bytes
/// before the trailer; a file too short to hold a header and a trailer is left alone. For the snapshot fuzz
/// target (`crate::fuzzing::seal_snapshot`): it lets damaged records get past [`verify`] to the decoder.
pub(crate) fn reseal(file: &mut [u8]) {
    if file.len() < HEADER_LEN + TRAILER_LEN {
        return;
    }
    let crc_at = file.len() - 4;
    let crc = crc32c(&file[..file.len() - TRAILER_LEN]);
    file[crc_at..].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CopiedSnapshot, HeapBackend, KeyedStateBackend};

    /// A snapshot with many keyed entries (several chunks) in two states of operator 1.
    fn sample() -> (TaskSnapshot, StateSnapshot) {
        let header = TaskSnapshot {
            job_id: "job".into(),
            checkpoint_id: 7,
            chain: 1,
            subtask: 0,
            parallelism: 2,
            operators: vec![
                OperatorSnapshot { vertex_id: "lines".into(), source_position: vec![0, 0, 0, 9], ..Default::default() },
                OperatorSnapshot { vertex_id: "count".into(), operator_state: vec![1, 2, 3], ..Default::default() },
            ],
        };
        let many: Entries =
            (0..(CHUNK_ENTRIES as u32 * 2 + 5)).map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; 3])).collect();
        let state = StateSnapshot {
            states: vec![("windows".into(), many), ("other".into(), vec![(b"k".to_vec(), b"v".to_vec())])],
        };
        (header, state)
    }

    fn parts() -> SnapshotParts {
        let (header, state) = sample();
        SnapshotParts { header, keyed: vec![(1, Box::new(CopiedSnapshot(state)))] }
    }

    fn expected() -> TaskSnapshot {
        let (mut header, state) = sample();
        header.operators[1].keyed = to_messages(state);
        header
    }

    /// Issue 19: the `snapshot` fuzz target found buffered records whose IPC buffers point past the message
    /// body, on which Arrow's reader panics (`slice_with_length`). Restoring them must be an error.
    #[test]
    fn gh_19_buffered_records_arrow_cannot_read_are_an_error_not_a_panic() {
        let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/snapshot/issue-19-arrow-ipc-buffer-out-of-range");
        let snapshot = read_snapshot(&seed).expect("the committed crash input reads (its checksum is right)");
        let decoded: Vec<_> = snapshot.operators.iter().map(|o| decode_batches(&o.operator_state)).collect();
        assert!(decoded.iter().any(Result::is_err), "{decoded:?}");
    }

    /// Issue 19: the `snapshot` fuzz target found buffered records announcing an IPC message body of a length
    /// the allocator refuses; Arrow's pull-based reader allocated it up front and aborted the process.
    /// Decoding over the bytes in hand, it is an error.
    #[test]
    fn gh_19_buffered_records_announcing_a_huge_body_are_an_error_not_an_abort() {
        let seed =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/snapshot/issue-19-arrow-ipc-huge-body-length");
        let snapshot = read_snapshot(&seed).expect("the committed crash input reads (its checksum was resealed)");
        let decoded: Vec<_> = snapshot.operators.iter().map(|o| decode_batches(&o.operator_state)).collect();
        assert!(decoded.iter().any(Result::is_err), "{decoded:?}");
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_written_snapshot_reads_back_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let written = write_snapshot(&dir.path().join("chk-7"), "1-0.snapshot", parts()).expect("write");
        let path = dir.path().join("chk-7/1-0.snapshot");
        assert_eq!(std::fs::metadata(&path).expect("file").len(), written.size);
        assert_eq!(written.keyed_bytes.len(), 1);
        assert_eq!(read_snapshot(&path).expect("read"), expected());
        // Nothing temporary is left beside it.
        assert_eq!(std::fs::read_dir(dir.path().join("chk-7")).expect("dir").count(), 1);
    }

    #[test]
    fn a_heap_backends_deferred_snapshot_ignores_later_writes() {
        let mut backend = HeapBackend::default();
        let state = backend.register("s").expect("register");
        backend.put(state, &[0, 1, 0, 0, 0, 1, 7], b"before").expect("put");
        backend.put(state, &[0, 1, 0, 0, 0, 1, 9], b"list").expect("put");
        let deferred = backend.deferred_snapshot().expect("snapshot");
        backend.put(state, &[0, 1, 0, 0, 0, 1, 7], b"after").expect("put");
        backend.append(state, &[0, 1, 0, 0, 0, 1, 9], b"+more").expect("append");
        backend.delete(state, &[0, 1, 0, 0, 0, 1, 9]).expect("delete");
        backend.put(state, &[0, 2, 0, 0, 0, 1, 8], b"new").expect("put");
        let mut seen = Vec::new();
        deferred
            .for_each(&mut |name, key, value| {
                seen.push((name.to_string(), key.to_vec(), value.to_vec()));
                Ok(())
            })
            .expect("read");
        let entry = |key: &[u8], value: &[u8]| ("s".to_string(), key.to_vec(), value.to_vec());
        assert_eq!(seen, vec![entry(&[0, 1, 0, 0, 0, 1, 7], b"before"), entry(&[0, 1, 0, 0, 0, 1, 9], b"list")]);
    }

    #[test]
    fn damaged_files_are_refused_with_the_path_and_the_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_snapshot(dir.path(), "s", parts()).expect("write");
        let path = dir.path().join("s");
        let good = std::fs::read(&path).expect("read");

        for at in [HEADER_LEN + 3, good.len() / 2, good.len() - TRAILER_LEN - 1] {
            let mut flipped = good.clone();
            flipped[at] ^= 0x40;
            std::fs::write(&path, &flipped).expect("write");
            let error = read_snapshot(&path).expect_err("flipped bit").to_string();
            assert!(error.contains("checksum") && error.contains(&*path.to_string_lossy()), "byte {at}: {error}");
        }

        std::fs::write(&path, &good[..good.len() - 10]).expect("write");
        assert!(read_snapshot(&path).expect_err("truncated").to_string().contains("truncated"));
        std::fs::write(&path, &good[..good.len() / 2]).expect("write");
        assert!(read_snapshot(&path).expect_err("cut in half").to_string().contains("truncated"));

        std::fs::write(&path, b"hello world, this is not a snapshot").expect("write");
        assert!(read_snapshot(&path).expect_err("garbage").to_string().contains("bad header"));

        let missing = read_snapshot(&dir.path().join("missing")).expect_err("missing").to_string();
        assert!(missing.contains("missing"), "{missing}");
    }

    /// RocksDB snapshots are incremental: the second checkpoint uploads only the SST files the first (completed)
    /// one did not store, references the others, and what it references reads back as the state at its taking.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rocksdb_snapshots_store_only_new_sst_files_and_read_back_whole() {
        use crate::state::{read_native_checkpoint, RocksDbBackend, RocksDbSettings, StateKey};
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = RocksDbSettings::new(1 << 20, 2, 8 << 20);
        let mut backend = RocksDbBackend::open(dir.path().join("db"), &settings).expect("open");
        let state = backend.register("windows").expect("register");
        let job = Storage::open(&dir.path().join("checkpoints").display().to_string()).expect("storage");
        let shared = std::sync::Arc::new(Mutex::new(SharedFiles::default()));
        let mut key = StateKey::default();
        let take = |backend: &mut RocksDbBackend, id: u64| {
            let header = TaskSnapshot {
                checkpoint_id: id,
                operators: vec![OperatorSnapshot { vertex_id: "count".into(), ..Default::default() }],
                ..Default::default()
            };
            let keyed = vec![(0, backend.deferred_snapshot().expect("snapshot"))];
            let (job, spool, shared) = (job.clone(), dir.path().join("spool"), shared.clone());
            let runtime = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                let parts = SnapshotParts { header, keyed };
                store_snapshot(&job, id, &spool, "0-0.snapshot", parts, &shared, &runtime).expect("store")
            })
            .join()
            .expect("thread")
        };
        for i in 0..1000u32 {
            backend.put(state, key.set_key((i % 128) as u16, &i.to_be_bytes()).as_bytes(), b"first").expect("put");
        }
        let first = take(&mut backend, 1);
        assert!(!first.uploaded_shared.is_empty() && first.uploaded_shared == first.shared);
        shared.lock().expect("lock").completed(1);
        for i in 1000..1500u32 {
            backend.put(state, key.set_key((i % 128) as u16, &i.to_be_bytes()).as_bytes(), b"second").expect("put");
        }
        let second = take(&mut backend, 2);
        let reused: Vec<&String> = second.shared.iter().filter(|f| first.shared.contains(f)).collect();
        assert!(!reused.is_empty(), "the first checkpoint's SST files are referenced again: {:?}", second.shared);
        assert!(second.uploaded_shared.iter().all(|f| !first.shared.contains(f)), "nothing is uploaded twice");
        assert!(!second.uploaded_shared.is_empty(), "the new writes are in a new file");

        // The second checkpoint reads back whole from its own files and the shared ones.
        let snapshot = read_snapshot(&dir.path().join("checkpoints/chk-2/0-0.snapshot")).expect("read");
        let native = snapshot.operators[0].rocksdb.clone().expect("a native checkpoint");
        let restored = dir.path().join("restored");
        for file in &native.files {
            let source = if file.shared.is_empty() {
                dir.path().join("checkpoints/chk-2").join(&file.private)
            } else {
                dir.path().join("checkpoints/shared").join(&file.shared)
            };
            std::fs::create_dir_all(&restored).expect("dir");
            std::fs::copy(&source, restored.join(&file.name)).expect("copy");
        }
        let states = native.state_names.into_iter().zip(native.column_families).collect();
        let mut values = Vec::new();
        read_native_checkpoint(restored.clone(), states, &settings, &mut |name, _, value| {
            values.push((name.to_string(), value.to_vec()));
            Ok(())
        })
        .expect("read back");
        assert_eq!(values.len(), 1500);
        assert_eq!(values.iter().filter(|(_, v)| v == b"second").count(), 500);
        assert!(!restored.exists(), "the restored copy is removed once read");
    }

    #[test]
    fn mismatched_keys_and_values_are_corrupt() {
        let state = KeyedStateSnapshot { name: "s".into(), keys: vec![vec![1]], values: vec![] };
        assert!(from_messages(vec![state]).is_err());
    }
}
