//! Every name of the checkpoint storage layout, written by TaskManagers and read, completed and deleted by
//! the JobManager. One definition, so the two sides cannot drift apart.
//!
//! ```text
//!   <checkpoint location>/<job id>/
//!       chk-<id>/                      one checkpoint (or a savepoint until it moves to its own directory)
//!           <chain>-<subtask>.snapshot one task's state (written by the TaskManager)
//!           _metadata                  written by the JobManager last: its presence makes the checkpoint
//!                                      complete, and a restore reads it first
//!       shared/                        files incremental snapshots share (RocksDB SST files), referenced by
//!                                      name from snapshots and `_metadata`, reference-counted by the JobManager
//! ```
//!
//! Names that arrive from the wire (snapshot and shared file names in acknowledgements and `_metadata`)
//! must be single path components: [`is_single_component`] says whether one is.
use crate::ids::CheckpointId;

/// The file in a completed checkpoint's directory that describes it (what a restore reads first).
pub const METADATA_FILE: &str = "_metadata";

/// The folder under a job's checkpoint location with the files incremental snapshots share.
pub const SHARED_DIR: &str = "shared";

/// The prefix of a checkpoint directory's name: `chk-<id>`.
const CHECKPOINT_DIR_PREFIX: &str = "chk-";

/// The name of checkpoint `id`'s directory under a job's checkpoint location.
pub fn checkpoint_dir_name(id: CheckpointId) -> String {
    format!("{CHECKPOINT_DIR_PREFIX}{}", id.0)
}

/// The checkpoint id a directory name stands for, if it is a checkpoint directory's name.
pub fn parse_checkpoint_dir_name(name: &str) -> Option<CheckpointId> {
    let digits = name.strip_prefix(CHECKPOINT_DIR_PREFIX)?;
    // `u64::from_str` takes a leading '+'; a directory the layout did not write is not a checkpoint's.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(CheckpointId)
}

/// The file name of a task's snapshot within its checkpoint's directory.
pub fn snapshot_file_name(chain: u32, subtask: u32) -> String {
    format!("{chain}-{subtask}.snapshot")
}

/// Whether `name` can safely be joined to a directory: one path component, not `.` or `..`, no separator
/// of any platform, no NUL. Storage file names from the wire must pass this before any `join`.
pub fn is_single_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_directory_names_round_trip_and_nothing_else_parses() {
        for id in [0, 1, 42, u64::MAX] {
            assert_eq!(parse_checkpoint_dir_name(&checkpoint_dir_name(CheckpointId(id))), Some(CheckpointId(id)));
        }
        assert_eq!(checkpoint_dir_name(CheckpointId(7)), "chk-7");
        for other in ["chk-", "chk-+1", "chk-1a", "shared", "_metadata", "chk-99999999999999999999", "xchk-1"] {
            assert_eq!(parse_checkpoint_dir_name(other), None, "{other}");
        }
    }

    #[test]
    fn only_single_path_components_are_safe_names() {
        for safe in ["0-0.snapshot", "000123.sst", "a..b", ".hidden"] {
            assert!(is_single_component(safe), "{safe}");
        }
        for unsafe_name in ["", ".", "..", "../x", "a/b", "/etc/passwd", "a\\b", "a\0b"] {
            assert!(!is_single_component(unsafe_name), "{unsafe_name:?}");
        }
        assert_eq!(snapshot_file_name(3, 1), "3-1.snapshot");
    }
}
