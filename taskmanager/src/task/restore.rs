//! Restoring a task from a checkpoint: fetch the snapshot files of its chain's vertices, keep this
//! subtask's key groups while reading, and hand each source and operator its part, once, before any input.
use sluice_common::checkpoint_layout::is_single_component;
use sluice_common::job::ValidatedJob;
use sluice_common::lifecycle::FailureKind;
use sluice_common::proto::{OperatorSnapshot, RestoreSpec};
use sluice_common::storage::Storage;

use super::plan::SubtaskPlan;
use super::{Head, TaskError};
use crate::checkpoint::{read_snapshot_keeping, SnapshotError};
use crate::operator_api::{Operator, OperatorError, Source, SourcePoll};
use crate::state::StateSettings;

/// Restores a chain's state: the source continues from its subtask's position, every other operator loads
/// its vertex's snapshots from all subtasks of the checkpointed job, keeping this subtask's key groups.
pub(super) async fn restore_chain(
    restore: &RestoreSpec,
    job: &ValidatedJob,
    plan: &SubtaskPlan,
    vertices: &[&sluice_common::proto::Vertex],
    state: &StateSettings,
    head: &mut Head,
    operators: &mut [Box<dyn Operator>],
) -> Result<(), TaskError> {
    let ids: Vec<&str> = vertices.iter().map(|v| v.id.as_str()).collect();
    let is_source = matches!(head, Head::Source(_));
    // The files that hold any vertex of this chain; a source only needs its own subtask's.
    let files: Vec<(String, bool)> = restore
        .files
        .iter()
        .filter(|f| f.vertex_ids.iter().any(|v| ids.contains(&v.as_str())))
        .map(|f| (f.file.clone(), f.subtask == plan.subtask))
        .collect();
    let checkpoint = restore.checkpoint_id;
    // Storage that cannot be opened or read is I/O; a snapshot that reads but does not decode is input.
    let failed = |kind: FailureKind, e: String| {
        TaskError::Operator(OperatorError::of(kind, format!("cannot restore checkpoint {checkpoint}: {e}")))
    };
    let storage = Storage::open(&restore.dir).map_err(|e| failed(FailureKind::Io, e.to_string()))?;
    let spool = state.spool_dir();
    let spool = spool.as_path();
    // Local copies (the files themselves in a local directory; downloads from an object store).
    let mut copies = Vec::with_capacity(files.len());
    for (file, own) in files {
        let copy = storage.fetch(&file, spool).await.map_err(|e| failed(FailureKind::Io, e.to_string()))?;
        copies.push((copy, storage.describe(&file), own));
    }
    let chain = job.chains.get(plan.chain as usize).map_or(1, |c| c.parallelism);
    let range = sluice_common::keygroup::key_group_range(plan.subtask, chain, job.max_parallelism());
    let key_groups = range.start as u16..=range.end.saturating_sub(1) as u16;
    let mine = key_groups.clone();
    let keep_groups = key_groups.clone();
    let mut snapshots = tokio::task::spawn_blocking(move || {
        // Only this subtask's key groups are kept while reading: memory holds its share, not every file.
        let keep = |key: &[u8]| crate::state::key_group_of_state_key(key).is_some_and(|g| mine.contains(&g));
        copies
            .into_iter()
            .map(|(copy, shown, own)| {
                // Errors name the file where it is stored, not the temporary download.
                let local = copy.path().display().to_string();
                read_snapshot_keeping(copy.path(), &keep).map(|s| (s, own)).map_err(|e| {
                    let kind = match e {
                        SnapshotError::Io { .. } => FailureKind::Io,
                        SnapshotError::Corrupt { .. } => FailureKind::Input,
                    };
                    (kind, e.to_string().replace(&local, &shown))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| TaskError::internal(format!("restoring checkpoint {checkpoint}: {e}")))?
    .map_err(|(kind, e)| failed(kind, e))?;
    for (snapshot, _) in &mut snapshots {
        for operator in &mut snapshot.operators {
            if let Some(native) = operator.rocksdb.take() {
                let keyed = restore_native(&storage, &restore.shared_dir, native, state, keep_groups.clone())
                    .await
                    .map_err(|e| failed(FailureKind::Io, format!("vertex '{}': {e}", operator.vertex_id)))?;
                operator.keyed.extend(keyed);
            }
        }
    }
    let of_vertex = |id: &str, own_only: bool| -> Vec<&OperatorSnapshot> {
        snapshots
            .iter()
            .filter(|(_, own)| *own || !own_only)
            .flat_map(|(s, _)| s.operators.iter().filter(|o| o.vertex_id == id))
            .collect()
    };
    let named = |id: &str, e: OperatorError| {
        TaskError::Operator(e.context(format_args!("vertex '{id}': cannot restore checkpoint {checkpoint}")))
    };
    let (first_operator, head_id) = if is_source { (1, ids.first().copied()) } else { (0, None) };
    if let (Head::Source(source), Some(id)) = (head, head_id) {
        let finished =
            restore.finished.iter().any(|f| f.subtask == plan.subtask && f.vertex_ids.iter().any(|v| v == id));
        if finished {
            // It had finished before the checkpoint: what it read is in the state of the tasks below.
            *source = Box::new(FinishedSource);
        } else {
            let all: Vec<&[u8]> = of_vertex(id, false).iter().map(|s| s.source_position.as_slice()).collect();
            let own = of_vertex(id, true).first().map(|s| s.source_position.as_slice());
            if own.is_some() || !all.is_empty() {
                source.seek_all(own, &all).map_err(|e| named(id, e))?;
            }
        }
    }
    for (operator, id) in operators.iter_mut().zip(ids.iter().skip(first_operator)) {
        let states = of_vertex(id, false);
        if !states.is_empty() {
            operator.restore_state(&states, key_groups.clone()).map_err(|e| named(id, e))?;
        }
    }
    Ok(())
}

/// A source that had finished before the checkpoint it is restored from (Flink's FLIP-147): it starts at
/// its end.
struct FinishedSource;

impl Source for FinishedSource {
    fn poll_next(&mut self) -> Result<SourcePoll, OperatorError> {
        Ok(SourcePoll::End)
    }
}

/// The entries of an incremental RocksDB snapshot whose key group is in `key_groups`: its files are
/// downloaded into a directory of their own (SST files from `shared_dir`), which is opened read-only, read
/// and removed.
async fn restore_native(
    storage: &Storage,
    shared_dir: &str,
    native: sluice_common::proto::RocksDbCheckpoint,
    state: &StateSettings,
    key_groups: std::ops::RangeInclusive<u16>,
) -> Result<Vec<sluice_common::proto::KeyedStateSnapshot>, String> {
    if native.state_names.len() != native.column_families.len() {
        return Err("a RocksDB snapshot with unequal state names and column families".into());
    }
    let shared = match shared_dir {
        "" => None,
        location => Some(Storage::open(location).map_err(|e| e.to_string())?),
    };
    let dir = state.spool_dir().join(format!("restore-{}", uuid::Uuid::new_v4().simple()));
    let downloaded = async {
        for file in &native.files {
            if !is_single_component(&file.name) {
                return Err(format!("a RocksDB snapshot names the file {:?}", file.name));
            }
            let target = dir.join(&file.name);
            match (&shared, file.shared.is_empty()) {
                (_, true) => storage.download_to(&file.private, &target).await,
                (Some(shared), false) => shared.download_to(&file.shared, &target).await,
                (None, false) => {
                    return Err(format!("{} is shared, and the checkpoint names no shared folder", file.name))
                }
            }
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = downloaded {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    let states: Vec<(String, String)> = native.state_names.into_iter().zip(native.column_families).collect();
    let settings = state.rocksdb.clone();
    tokio::task::spawn_blocking(move || {
        let mut out: Vec<sluice_common::proto::KeyedStateSnapshot> = states
            .iter()
            .map(|(name, _)| sluice_common::proto::KeyedStateSnapshot { name: name.clone(), ..Default::default() })
            .collect();
        let mut visit = |name: &str, key: &[u8], value: &[u8]| {
            let mine = crate::state::key_group_of_state_key(key).is_some_and(|g| key_groups.contains(&g));
            if let (true, Some(state)) = (mine, out.iter_mut().find(|s| s.name == name)) {
                state.keys.push(key.to_vec());
                state.values.push(value.to_vec());
            }
            Ok(())
        };
        crate::state::read_native_checkpoint(dir, states, &settings, &mut visit).map_err(|e| e.to_string())?;
        Ok(out)
    })
    .await
    .map_err(|e| e.to_string())?
}
