//! A task's side of checkpoints: the commands its TaskManager forwards to it, how a snapshot file is
//! written and read, and how a task reports the outcome to the JobManager.
//!
//! A task's snapshot is one file, `chk-N/<chain>-<subtask>.snapshot` under the job's checkpoint directory:
//!
//! ```text
//! "SLUICESN" | format version (u32 BE) | body length (u64 BE) | body (TaskSnapshot, protobuf) | CRC-32C of body (u32 BE)
//! ```
//!
//! The file is written under a temporary name, synced, then renamed, so a reader never sees half a file;
//! the length and checksum catch one that was damaged afterwards. A task writes it after it has sent the
//! barrier on (the asynchronous part): processing goes on while the bytes go to storage.
use std::path::{Path, PathBuf};

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::record_batch::RecordBatch;
use prost::Message;
use sluice_common::proto::{
    AcknowledgeCheckpointRequest, DeclineCheckpointRequest, KeyedStateSnapshot, OperatorSnapshot, TaskSnapshot,
};

use crate::state::{Entries, KeyedStateBackend, StateError, StateSnapshot};

const MAGIC: &[u8; 8] = b"SLUICESN";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8;

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

/// The file name of a task's snapshot within its checkpoint's directory.
pub fn snapshot_file_name(chain: u32, subtask: u32) -> String {
    format!("{chain}-{subtask}.snapshot")
}

/// The directory of checkpoint `id` under a job's checkpoint directory.
pub fn checkpoint_dir(job_dir: &Path, id: u64) -> PathBuf {
    job_dir.join(format!("chk-{id}"))
}

/// Writes `snapshot` as `dir/name` (creating `dir`), durably and atomically. Returns the file's size.
pub fn write_snapshot(dir: &Path, name: &str, snapshot: &TaskSnapshot) -> Result<u64, SnapshotError> {
    let path = dir.join(name);
    let io = |source| SnapshotError::Io { path: path.clone(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let body = snapshot.encode_to_vec();
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_be_bytes());
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(&crc32c(&body).to_be_bytes());
    let temporary = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(e));
    }
    Ok(bytes.len() as u64)
}

/// Reads a snapshot file written by [`write_snapshot`], checking its header, length and checksum.
pub fn read_snapshot(path: &Path) -> Result<TaskSnapshot, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io { path: path.to_path_buf(), source })?;
    if bytes.len() < HEADER_LEN + 4 || &bytes[..8] != MAGIC {
        return Err(corrupt("not a Sluice snapshot file (bad header)".into()));
    }
    let version = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!("snapshot format version {version}; this build reads {FORMAT_VERSION}")));
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&bytes[12..20]);
    let length = u64::from_be_bytes(length);
    if length != (bytes.len() - HEADER_LEN - 4) as u64 {
        return Err(corrupt(format!(
            "truncated or padded: the header says {length} bytes of body, the file has {}",
            bytes.len() - HEADER_LEN - 4
        )));
    }
    let body = &bytes[HEADER_LEN..bytes.len() - 4];
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[bytes.len() - 4..]);
    if u32::from_be_bytes(stored) != crc32c(body) {
        return Err(corrupt("checksum mismatch: the file was damaged after it was written".into()));
    }
    TaskSnapshot::decode(body).map_err(|e| corrupt(format!("cannot decode: {e}")))
}

/// Every state of `backend`, as snapshot messages.
pub fn snapshot_backend(backend: &mut dyn KeyedStateBackend) -> Result<Vec<KeyedStateSnapshot>, StateError> {
    Ok(to_messages(backend.snapshot()?))
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
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| e.to_string())?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| format!("buffered records: {e}"))
}

/// CRC-32C (Castagnoli), bitwise with a 256-entry table: fast enough for snapshot files, no dependency.
fn crc32c(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut crc = i as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            }
            *entry = crc;
        }
        table
    });
    !bytes.iter().fold(!0u32, |crc, &b| table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TaskSnapshot {
        TaskSnapshot {
            job_id: "job".into(),
            checkpoint_id: 7,
            chain: 1,
            subtask: 0,
            parallelism: 2,
            operators: vec![OperatorSnapshot {
                vertex_id: "count".into(),
                keyed: vec![KeyedStateSnapshot {
                    name: "windows".into(),
                    keys: vec![b"k1".to_vec(), b"k2".to_vec()],
                    values: vec![b"v1".to_vec(), b"v2".to_vec()],
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_written_snapshot_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let size = write_snapshot(&dir.path().join("chk-7"), "1-0.snapshot", &sample()).expect("write");
        let path = dir.path().join("chk-7/1-0.snapshot");
        assert_eq!(std::fs::metadata(&path).expect("file").len(), size);
        assert_eq!(read_snapshot(&path).expect("read"), sample());
        // Nothing temporary is left beside it.
        assert_eq!(std::fs::read_dir(dir.path().join("chk-7")).expect("dir").count(), 1);
    }

    #[test]
    fn damaged_files_are_refused_with_the_path_and_the_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_snapshot(dir.path(), "s", &sample()).expect("write");
        let path = dir.path().join("s");
        let good = std::fs::read(&path).expect("read");

        let mut flipped = good.clone();
        flipped[HEADER_LEN + 3] ^= 0x40;
        std::fs::write(&path, &flipped).expect("write");
        let error = read_snapshot(&path).expect_err("flipped bit").to_string();
        assert!(error.contains("checksum") && error.contains(&*path.to_string_lossy()), "{error}");

        std::fs::write(&path, &good[..good.len() - 10]).expect("write");
        assert!(read_snapshot(&path).expect_err("truncated").to_string().contains("truncated"));

        std::fs::write(&path, b"hello world, this is not a snapshot").expect("write");
        assert!(read_snapshot(&path).expect_err("garbage").to_string().contains("bad header"));

        let missing = read_snapshot(&dir.path().join("missing")).expect_err("missing").to_string();
        assert!(missing.contains("missing"), "{missing}");
    }

    #[test]
    fn mismatched_keys_and_values_are_corrupt() {
        let state = KeyedStateSnapshot { name: "s".into(), keys: vec![vec![1]], values: vec![] };
        assert!(from_messages(vec![state]).is_err());
    }
}
