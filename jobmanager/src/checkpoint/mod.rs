//! Checkpoint coordination (ARCHITECTURE.md §7): one [`Coordinator`] per job, driven by the job's actor.
//!
//! A checkpoint goes: trigger (a row IN_PROGRESS in the store, then TriggerCheckpoint to every TaskManager
//! with a source task) → every task acknowledges with its snapshot file → the coordinator writes the
//! checkpoint's `_metadata` file and marks the row COMPLETED (one statement: the commit point) → every
//! TaskManager is told, so sinks may commit. A decline, a timeout, a task that ends, or a store that cannot
//! record the checkpoint aborts it: the row becomes FAILED and its directory is deleted. One checkpoint is in
//! flight at a time; requests that come meanwhile (a user's checkpoint or savepoint) wait for it. Consecutive
//! failures beyond the job's tolerance fail the job.
//!
//! A savepoint is a checkpoint that a user asked for and owns: on completion its directory moves from
//! `chk-N/` to the savepoint directory, and the coordinator never deletes it.
//!
//! Retention: the newest `retained` completed checkpoints keep their files; an older one is deleted once a
//! newer one completes. When the job is cancelled or finishes, its checkpoints are deleted unless it asked
//! to retain them; a failed job keeps them (they are what it would be restored from).
//!
//! ## Layout
//! - [`coordinator`]: the state of a job's checkpoints: trigger, acknowledgements, declines, expiry, the
//!   queue of requests, and the failure tolerance;
//! - [`completion`]: the commit of a checkpoint whose every task acknowledged (metadata, the store's row,
//!   the TaskManagers' notification);
//! - [`retention`]: which files stay (retained checkpoints, reference-counted shared files) and the
//!   janitor task that deletes the rest off the actor;
//! - [`restore`]: checking a checkpoint or savepoint against a job before a deployment starts from it;
//! - [`metadata`]: the `_metadata` file, written last into a completed checkpoint.
//!
//! The coordinator reaches the outside only through [`CheckpointServices`] (the store, its metrics, a
//! [`TaskManagerClient`]): it never sees the JobManager's context, so a test can drive it with a fake client.
mod completion;
mod coordinator;
pub mod metadata;
pub mod restore;
mod retention;

use std::sync::Arc;

use sluice_common::lifecycle::CheckpointKind;
use sluice_common::storage::Storage;
use tokio::sync::oneshot;

pub(crate) use coordinator::Coordinator;
pub use metadata::CheckpointMetadata;
pub use restore::{plan_requested_restore, plan_restore, RestoreError, RestoreRequestError};
pub(crate) use restore::{retained_checkpoint, RetainedCheckpoint};

use crate::metrics::CheckpointMetrics;
use crate::store::Store;
use crate::task_manager_client::TaskManagerClient;

/// What a user or the periodic trigger asks for.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Checkpoint,
    /// A checkpoint before the job moves off a TaskManager that is leaving: the sources stop after their
    /// barrier (nothing is processed that the next attempt would process again), the sinks commit before the
    /// tasks are cancelled, and the job is redeployed from it once it completed (or from the latest one if it
    /// failed). Stored and retained as a checkpoint.
    Drain,
    /// A savepoint going to `dir` (its final location); `stop`: the job stops once it completed.
    Savepoint {
        dir: Storage,
        stop: bool,
    },
}

impl Kind {
    /// The kind as stored and shown.
    pub(crate) fn kind(&self) -> CheckpointKind {
        match self {
            Kind::Checkpoint | Kind::Drain => CheckpointKind::Checkpoint,
            Kind::Savepoint { .. } => CheckpointKind::Savepoint,
        }
    }

    /// Whether the sources stop after this checkpoint's barrier and wait to be cancelled.
    pub(crate) fn stops_sources(&self) -> bool {
        matches!(self, Kind::Drain | Kind::Savepoint { stop: true, .. })
    }
}

/// A request waiting for its checkpoint to start; answered with the checkpoint's id or why none started.
pub(crate) type Reply = oneshot::Sender<Result<u64, String>>;

/// What the actor must do after the coordinator handled something.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing more.
    Continue,
    /// Too many consecutive checkpoints failed: fail the job with this cause.
    FailJob(String),
    /// A stop-with-savepoint completed: stop the job.
    Stop,
    /// Cancel the tasks and deploy the job anew from its latest checkpoint, without asking the restart strategy
    /// (this is no failure): a drain checkpoint ended, or a stop-with-savepoint failed after its sources stopped.
    /// Carries why.
    Redeploy(String),
}

/// What a coordinator needs from the JobManager.
#[derive(Clone)]
pub(crate) struct CheckpointServices {
    /// Where checkpoint rows are recorded.
    pub store: Store,
    /// The checkpoint series.
    pub metrics: CheckpointMetrics,
    /// How triggers and completion notices reach TaskManagers.
    pub client: Arc<dyn TaskManagerClient>,
}

#[cfg(test)]
mod tests;
