//! A completed checkpoint's `_metadata` file (JSON): enough to restore from its directory alone.
//!
//! The JobManager writes it last, after every snapshot file is in place (and, for a savepoint, after the
//! directory moved): its presence is what makes a directory a restorable checkpoint. Its `format` is
//! checked on read, so a file of another build's format is refused with both numbers, never misread.
use serde::{Deserialize, Serialize};
use sluice_common::checkpoint_layout::METADATA_FILE;
use sluice_common::storage::{Storage, StorageError};

use super::restore::RestoreError;

/// The format this build writes and reads.
pub const METADATA_FORMAT: u32 = 1;

/// A completed checkpoint's `_metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    pub format: u32,
    pub job_id: String,
    pub checkpoint_id: u64,
    /// CHECKPOINT or SAVEPOINT (`sluice_common::lifecycle::CheckpointKind`).
    pub kind: String,
    pub max_parallelism: u32,
    /// Every vertex of the job, with its parallelism and whether it is a source.
    pub vertices: Vec<MetadataVertex>,
    /// One per task.
    pub files: Vec<MetadataFile>,
    /// Where the shared files the tasks' incremental snapshots reference are (a location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_dir: Option<String>,
}

/// A vertex of the job that took the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataVertex {
    pub id: String,
    pub parallelism: u32,
    pub source: bool,
}

/// One task's part of the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataFile {
    pub file: String,
    pub chain: u32,
    pub subtask: u32,
    pub vertex_ids: Vec<String>,
    pub state_size_bytes: u64,
    pub alignment_ms: u64,
    pub sync_ms: u64,
    pub async_ms: u64,
    /// Files under the shared folder its snapshot references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
}

/// Writes `_metadata` into `dir` atomically (a local file: temporary file, sync, rename).
pub(crate) async fn write_metadata(dir: &Storage, metadata: &CheckpointMetadata) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec_pretty(metadata).map_err(|e| StorageError::new(e.to_string()))?;
    dir.put(METADATA_FILE, bytes).await
}

/// Reads the `_metadata` of a checkpoint or savepoint (`path` is its directory or the file itself).
///
/// A file that is absent, damaged or of another format makes the checkpoint [`RestoreError::Unusable`]; a
/// store that does not answer (or answers with an error that says nothing of the file) is
/// [`RestoreError::Unavailable`], and the caller may try again.
pub(crate) async fn read_metadata(path: &str) -> Result<(Storage, CheckpointMetadata), RestoreError> {
    let trimmed = path.trim().trim_end_matches('/');
    let location = trimmed.strip_suffix(METADATA_FILE).map_or(trimmed, |l| l.trim_end_matches('/'));
    let dir = Storage::open(if location.is_empty() { "/" } else { location })
        .map_err(|e| RestoreError::Unusable(e.to_string()))?;
    let bytes = match dir.get(METADATA_FILE).await {
        Ok(bytes) => bytes,
        Err(e) if !e.not_found => return Err(RestoreError::Unavailable(e.to_string())),
        Err(e) => {
            // An object store answers "not found" for a missing bucket too (or a proxy's 404): absence is proof
            // only if the store lists the location normally. A local "not found" is proof by itself.
            if dir.local_dir().is_none() {
                if let Err(listing) = dir.list_files().await {
                    return Err(RestoreError::Unavailable(format!("{e}, and {listing}")));
                }
            }
            return Err(RestoreError::Unusable(format!("{e} (is {path} a completed checkpoint or savepoint?)")));
        }
    };
    let metadata =
        parse_metadata(&bytes).map_err(|e| RestoreError::Unusable(format!("{}: {e}", dir.describe(METADATA_FILE))))?;
    Ok((dir, metadata))
}

/// Parses the bytes of a `_metadata` file and checks its format: the pure half of [`read_metadata`] (and
/// what the `metadata` fuzz target feeds). Any bytes give a metadata or an error, never a panic.
pub fn parse_metadata(bytes: &[u8]) -> Result<CheckpointMetadata, String> {
    let metadata: CheckpointMetadata =
        serde_json::from_slice(bytes).map_err(|e| format!("not checkpoint metadata: {e}"))?;
    if metadata.format != METADATA_FORMAT {
        return Err(format!("metadata format {}; this build reads {METADATA_FORMAT}", metadata.format));
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed of the `metadata` fuzz target is a `_metadata` a real checkpoint wrote: it must keep parsing,
    /// so that fuzzing starts from an input that reaches past the format check.
    #[test]
    fn the_fuzz_seed_metadata_parses() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/metadata");
        let mut seeds = 0;
        for entry in std::fs::read_dir(&corpus).expect("the committed corpus") {
            let path = entry.expect("entry").path();
            let metadata = parse_metadata(&std::fs::read(&path).expect("seed"));
            assert!(metadata.is_ok(), "{}: {metadata:?}", path.display());
            seeds += 1;
        }
        assert!(seeds > 0, "no seed in {}", corpus.display());
    }

    #[test]
    fn metadata_of_another_format_or_not_metadata_at_all_is_refused_with_the_reason() {
        let other = br#"{"format":7,"job_id":"j","checkpoint_id":1,"kind":"CHECKPOINT","max_parallelism":128,
            "vertices":[],"files":[]}"#;
        assert_eq!(parse_metadata(other), Err("metadata format 7; this build reads 1".to_string()));
        let garbage = parse_metadata(b"\x00not json").expect_err("garbage");
        assert!(garbage.starts_with("not checkpoint metadata: "), "{garbage}");
    }
}
