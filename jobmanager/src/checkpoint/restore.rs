//! Choosing and checking the state a deployment starts from: a checkpoint or savepoint is read back
//! (`_metadata` first) and checked against the job before any task is deployed with it.
use std::collections::BTreeSet;

use sluice_common::checkpoint_layout::{is_single_component, METADATA_FILE};
use sluice_common::confine::{Confinement, Refusal};
use sluice_common::job::ValidatedJob;
use sluice_common::proto::vertex::Operator;
use sluice_common::proto::{FinishedSubtask, RestoreSpec, SnapshotFile};
use sluice_common::storage::Storage;

use super::metadata::read_metadata;

/// A completed checkpoint an earlier JobManager retained: (id, directory, shared files it references).
pub(crate) type RetainedCheckpoint = (u64, Storage, Vec<String>);

/// Why a checkpoint cannot start the job, as far as can be told now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The store did not answer, or answered with an error that says nothing of what is stored (a refused
    /// connection, a timeout, a server error, a local I/O error): the checkpoint may be fine. Try again later;
    /// never fall back to an older checkpoint or to the start because of this.
    Unavailable(String),
    /// Proven unusable: its `_metadata` is absent, damaged or of another format, a file it names is missing, or
    /// it does not fit the job. An older retained checkpoint may do.
    Unusable(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Unavailable(why) => write!(f, "checkpoint storage unavailable: {why}"),
            RestoreError::Unusable(why) => f.write_str(why),
        }
    }
}

/// Reads a checkpoint's or savepoint's `_metadata` (`path` is its directory or the file itself) and checks
/// that it can start `job`: same number of key groups, every vertex of the checkpoint still in the job,
/// sources at their old parallelism (except Kafka sources), every snapshot file present. The error says
/// what is wrong and where, and whether it is the checkpoint or the store ([`RestoreError`]).
pub async fn plan_restore(path: &str, job: &ValidatedJob) -> Result<RestoreSpec, RestoreError> {
    let (dir, metadata) = read_metadata(path).await?;
    plan_restore_from(dir, metadata, job).await
}

/// Why a restore a request asked for cannot be planned.
#[derive(Debug)]
pub enum RestoreRequestError {
    /// The location, or the shared folder its `_metadata` names, is not an allowed savepoint location.
    Refused(Refusal),
    /// The checkpoint cannot start the job (see [`plan_restore`]).
    Invalid(String),
    /// The store did not answer; the request may be sent again.
    Unavailable(String),
}

impl From<RestoreError> for RestoreRequestError {
    fn from(e: RestoreError) -> Self {
        match e {
            RestoreError::Unavailable(_) => RestoreRequestError::Unavailable(e.to_string()),
            RestoreError::Unusable(why) => RestoreRequestError::Invalid(why),
        }
    }
}

/// [`plan_restore`] for a location a request names (`?savepoint_path=`): the location must be an allowed
/// savepoint location, checked before anything is read there, and so must the shared folder its
/// `_metadata` names, checked before anything is read there.
pub async fn plan_requested_restore(
    path: &str,
    job: &ValidatedJob,
    confinement: &Confinement,
) -> Result<RestoreSpec, RestoreRequestError> {
    confinement.check_savepoint_target(path).map_err(RestoreRequestError::Refused)?;
    let (dir, metadata) = read_metadata(path).await?;
    if let Some(shared) = &metadata.shared_dir {
        confinement.check_savepoint_target(shared).map_err(|refusal| {
            let problem = format!("{}: its shared folder {}", dir.describe(METADATA_FILE), refusal.problem);
            RestoreRequestError::Refused(Refusal { reason: refusal.reason, problem })
        })?;
    }
    Ok(plan_restore_from(dir, metadata, job).await?)
}

async fn plan_restore_from(
    dir: Storage,
    metadata: super::CheckpointMetadata,
    job: &ValidatedJob,
) -> Result<RestoreSpec, RestoreError> {
    let file = dir.describe(METADATA_FILE);
    let unavailable = |e: sluice_common::storage::StorageError| RestoreError::Unavailable(e.to_string());
    let mut problems = Vec::new();
    let shared = match &metadata.shared_dir {
        Some(location) => Some(
            Storage::open(location).map_err(|e| RestoreError::Unusable(format!("{file}: its shared folder: {e}")))?,
        ),
        None => None,
    };
    if metadata.max_parallelism != job.max_parallelism() {
        problems.push(format!(
            "the checkpoint has {} key groups (max_parallelism) and the job {}; they must be equal",
            metadata.max_parallelism,
            job.max_parallelism()
        ));
    }
    for vertex in &metadata.vertices {
        match job.vertex(&vertex.id) {
            None => problems
                .push(format!("vertex '{}' of the checkpoint is not in the job; its state would be lost", vertex.id)),
            // A Kafka source's positions are per partition and merge at any parallelism; the generator's
            // and the file source's are per subtask.
            Some(now)
                if vertex.source
                    && now.parallelism != vertex.parallelism
                    && !matches!(now.operator, Some(Operator::KafkaSource(_))) =>
            {
                problems.push(format!(
                    "source '{}' ran at parallelism {} and would now run at {}; this source resumes only at its \
                     old parallelism (Kafka sources rescale)",
                    vertex.id, vertex.parallelism, now.parallelism
                ))
            }
            Some(_) => {}
        }
    }
    // A source that had finished starts at its end: per subtask at its old parallelism, and at any parallelism
    // once every subtask had finished (a Kafka source's partitions change owner when it rescales).
    let mut finished: Vec<FinishedSubtask> = metadata
        .finished
        .iter()
        .map(|f| FinishedSubtask { subtask: f.subtask, vertex_ids: f.vertex_ids.clone() })
        .collect();
    for vertex in metadata.vertices.iter().filter(|v| v.source) {
        let Some(now) = job.vertex(&vertex.id).filter(|now| now.parallelism != vertex.parallelism) else { continue };
        let ended: BTreeSet<u32> =
            metadata.finished.iter().filter(|f| f.vertex_ids.contains(&vertex.id)).map(|f| f.subtask).collect();
        if ended.is_empty() {
            continue;
        }
        if (0..vertex.parallelism).all(|s| ended.contains(&s)) {
            let all =
                (0..now.parallelism).map(|subtask| FinishedSubtask { subtask, vertex_ids: vec![vertex.id.clone()] });
            finished.extend(all);
        } else {
            problems.push(format!(
                "source '{}' had finished on {} of its {} subtasks; it resumes only at its old parallelism",
                vertex.id,
                ended.len(),
                vertex.parallelism
            ));
        }
    }
    for f in &metadata.files {
        if !is_single_component(&f.file) || !dir.exists(&f.file).await.map_err(unavailable)? {
            problems.push(format!("snapshot file {} is missing", dir.describe(&f.file)));
        }
        for name in &f.shared {
            let present = match &shared {
                Some(shared) if is_single_component(name) => shared.exists(name).await.map_err(unavailable)?,
                _ => false,
            };
            if !present {
                let shown = shared.as_ref().map_or_else(|| name.clone(), |s| s.describe(name));
                problems.push(format!("shared file {shown} is missing"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(RestoreError::Unusable(format!("cannot restore from {}: {}", dir.location(), problems.join("; "))));
    }
    Ok(RestoreSpec {
        dir: dir.location(),
        checkpoint_id: metadata.checkpoint_id,
        files: metadata
            .files
            .into_iter()
            .map(|f| SnapshotFile { file: f.file, subtask: f.subtask, vertex_ids: f.vertex_ids })
            .collect(),
        shared_dir: metadata.shared_dir.unwrap_or_default(),
        finished,
    })
}

/// Reads what a retained checkpoint at `location` references, for a JobManager that takes the job over.
pub(crate) async fn retained_checkpoint(id: u64, location: &str) -> Result<RetainedCheckpoint, RestoreError> {
    let (dir, metadata) = read_metadata(location).await?;
    let shared = metadata.files.into_iter().flat_map(|f| f.shared).collect();
    Ok((id, dir, shared))
}
