//! The format of a completed checkpoint's `_metadata` file (JSON; its name and place are in
//! [`crate::checkpoint_layout`]): enough to restore from the checkpoint's directory alone.
//!
//! The JobManager writes it last and reads it first on a restore (`jobmanager/src/checkpoint/metadata.rs`
//! does the storage side). The format lives here, beside the layout, because it is the layout's contract
//! rather than the JobManager's: a tool that inspects checkpoints, or the `metadata` fuzz target, parses it
//! without linking the JobManager. Its `format` is checked on read, so a file of another build's format is
//! refused with both numbers, never misread.
use serde::{Deserialize, Serialize};

/// The format this build writes when no task had finished: builds before [`METADATA_FORMAT_FINISHED`] read it.
pub const METADATA_FORMAT: u32 = 1;

/// The format this build writes when some task had finished before the checkpoint ([`CheckpointMetadata::finished`]).
/// A build that knows only format 1 refuses it rather than restart a finished source from its beginning.
pub const METADATA_FORMAT_FINISHED: u32 = 2;

/// A completed checkpoint's `_metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// [`METADATA_FORMAT`] of the build that wrote it.
    pub format: u32,
    /// The job that took the checkpoint.
    pub job_id: String,
    /// The checkpoint's id (its directory is `chk-<id>` until a savepoint moves).
    pub checkpoint_id: u64,
    /// CHECKPOINT or SAVEPOINT (`sluice_common::lifecycle::CheckpointKind`).
    pub kind: String,
    /// The job's number of key groups: state restores only into a job with the same.
    pub max_parallelism: u32,
    /// Every vertex of the job, with its parallelism and whether it is a source.
    pub vertices: Vec<MetadataVertex>,
    /// One per task.
    pub files: Vec<MetadataFile>,
    /// Where the shared files the tasks' incremental snapshots reference are (a location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_dir: Option<String>,
    /// Tasks that had finished before the checkpoint and took no part in it (Flink's FLIP-147): a restore
    /// starts their sources at the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished: Vec<FinishedTask>,
}

impl CheckpointMetadata {
    /// The format to write: [`METADATA_FORMAT_FINISHED`] when it names finished tasks, else [`METADATA_FORMAT`].
    pub fn format_needed(&self) -> u32 {
        if self.finished.is_empty() {
            METADATA_FORMAT
        } else {
            METADATA_FORMAT_FINISHED
        }
    }
}

/// A task that had finished before the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedTask {
    /// The task's chain (its index among the job's chains).
    pub chain: u32,
    /// The task's subtask index.
    pub subtask: u32,
    /// The vertices chained in the task, in chain order.
    pub vertex_ids: Vec<String>,
}

/// A vertex of the job that took the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataVertex {
    /// The vertex id of the job graph.
    pub id: String,
    /// Its parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// A source (whose position, not keyed state, the checkpoint holds).
    pub source: bool,
}

/// One task's part of the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataFile {
    /// The snapshot file's name in the checkpoint's directory (`<chain>-<subtask>.snapshot`).
    pub file: String,
    /// The task's chain (its index among the job's chains).
    pub chain: u32,
    /// The task's subtask index.
    pub subtask: u32,
    /// The vertices chained in the task, in chain order.
    pub vertex_ids: Vec<String>,
    /// Bytes of the snapshot.
    pub state_size_bytes: u64,
    /// How long the task waited for barrier alignment.
    pub alignment_ms: u64,
    /// How long the snapshot's synchronous part held the task.
    pub sync_ms: u64,
    /// How long writing the snapshot out took after the task went on.
    pub async_ms: u64,
    /// Files under the shared folder its snapshot references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
}

/// Parses the bytes of a `_metadata` file and checks its format: what a restore checks after reading
/// the file (and what the `metadata` fuzz target feeds). Any bytes give a metadata or an error, never a panic.
pub fn parse_metadata(bytes: &[u8]) -> Result<CheckpointMetadata, String> {
    let metadata: CheckpointMetadata =
        serde_json::from_slice(bytes).map_err(|e| format!("not checkpoint metadata: {e}"))?;
    if metadata.format != METADATA_FORMAT && metadata.format != METADATA_FORMAT_FINISHED {
        return Err(format!(
            "metadata format {}; this build reads {METADATA_FORMAT} and {METADATA_FORMAT_FINISHED}",
            metadata.format
        ));
    }
    if metadata.format == METADATA_FORMAT && !metadata.finished.is_empty() {
        return Err(format!("metadata format {METADATA_FORMAT} names finished tasks, which it cannot hold"));
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
        assert_eq!(parse_metadata(other), Err("metadata format 7; this build reads 1 and 2".to_string()));
        let finished_in_1 = br#"{"format":1,"job_id":"j","checkpoint_id":1,"kind":"CHECKPOINT","max_parallelism":128,
            "vertices":[],"files":[],"finished":[{"chain":0,"subtask":0,"vertex_ids":["s"]}]}"#;
        assert!(parse_metadata(finished_in_1).is_err_and(|e| e.contains("cannot hold")));
        let garbage = parse_metadata(b"\x00not json").expect_err("garbage");
        assert!(garbage.starts_with("not checkpoint metadata: "), "{garbage}");
    }
}
