//! Reading and writing a completed checkpoint's `_metadata` file; its format is
//! [`sluice_common::checkpoint_metadata`].
//!
//! The JobManager writes it last, after every snapshot file is in place (and, for a savepoint, after the
//! directory moved): its presence is what makes a directory a restorable checkpoint.
use sluice_common::checkpoint_layout::METADATA_FILE;
use sluice_common::storage::{Storage, StorageError};

use super::restore::RestoreError;

pub use sluice_common::checkpoint_metadata::{
    parse_metadata, CheckpointMetadata, FinishedTask, MetadataFile, MetadataVertex, METADATA_FORMAT,
};

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
