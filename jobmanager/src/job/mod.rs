//! Jobs: one actor task per job, and the handle everyone else uses to reach it.
//!
//! The actor ([`actor`]) owns the job's lifecycle: it waits for slots, deploys, follows task reports and
//! TaskManager losses, cancels, and records every transition ([`sluice_common::lifecycle::job`]) in the store before acting on the
//! next. Other parts of the JobManager never change a job's state themselves:
//! - REST handlers write the *desired* state (a cancel request) to the store and wake the actor through
//!   [`JobShared::desired_changed`] (a `Notify`, which keeps one pending wake-up and so never queues);
//! - the gRPC service forwards task reports through the actor's bounded inbox, after fencing off reports
//!   of other attempts;
//! - heartbeats update the latest task metrics in the shared live view directly: metrics are
//!   observations, not lifecycle, and need no ordering with transitions.
//!
//! A job is in the [`JobRegistry`] while its actor runs. When it ends, its final record (status, cause,
//! final metrics) is in the store and the registry forgets it, so memory does not grow with history.
pub(crate) mod actor;
mod adoption;
pub(crate) mod exceptions;
pub mod recovery;
pub mod restart;
mod restore_point;
mod states;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_common::ids::{Attempt, JobId};
use sluice_common::job::ValidatedJob;
use sluice_common::proto::{AcknowledgeCheckpointRequest, DeclineCheckpointRequest, TaskMetrics, TaskStateReport};
use tokio::sync::{mpsc, Notify};

pub use crate::deployment::{TaskEntry, TaskKey};
pub(crate) use adoption::{Adoption, FoundTask};
pub use exceptions::RecoveryPhase;
use sluice_common::lifecycle::JobStatus;

/// Capacity of a job actor's inbox (task reports). A job has at most a few thousand subtasks, each
/// sending a handful of reports in its life; when the inbox is full, the gRPC handler waits (up to
/// [`REPORT_FORWARD_TIMEOUT`]) and so slows the reporting TaskManager rather than growing memory.
pub const JOB_INBOX_CAPACITY: usize = 1024;
/// How long the gRPC handler waits for room in a full inbox before refusing the report as undeliverable.
pub const REPORT_FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What an actor's inbox carries.
#[derive(Debug)]
pub(crate) enum JobEvent {
    /// A task changed state (already checked to be of the current attempt).
    TaskReport(TaskStateReport),
    /// A task stored its part of a checkpoint.
    CheckpointAck(AcknowledgeCheckpointRequest),
    /// A task could not take its part of a checkpoint.
    CheckpointDecline(DeclineCheckpointRequest),
    /// A user asked for a checkpoint or savepoint; answered with its id once it started, or why none did.
    CheckpointRequest(crate::checkpoint::Kind, crate::checkpoint::Reply),
}

/// The live state of a job, written by its actor (status, tasks) and by heartbeats (metrics), read by REST.
#[derive(Clone, Debug)]
pub struct JobLive {
    /// Current status.
    pub status: JobStatus,
    /// Why the job is where it is, while it waits (e.g. for slots).
    pub reason: Option<String>,
    /// Current attempt; 0 before the first deployment.
    pub attempt: Attempt,
    /// Why it failed (for a job that restarted: the last failure).
    pub failure_cause: Option<String>,
    /// Restarts so far.
    pub restarts: u32,
    /// How long the last recovery took: failure detected → every task of the next attempt RUNNING.
    pub last_recovery_ms: Option<u64>,
    /// Moves off a leaving TaskManager so far (redeployments that are no failure; not in `restarts`).
    pub relocations: u32,
    /// How long the last move stalled the job: the TaskManager's notice → every task of the next attempt
    /// RUNNING elsewhere.
    pub last_relocation_ms: Option<u64>,
    /// The checkpoint or savepoint the current attempt's state started from: (id, location).
    pub restored_from: Option<(u64, String)>,
    /// When every task of the current attempt was first running (ms since the epoch); None while not.
    pub up_since_ms: Option<u64>,
    /// When the job reached its terminal status (ms since the epoch), set with the status: a reader that
    /// saw the stored record just before the transition still gets the end time with the terminal status.
    pub end_time_ms: Option<u64>,
    /// The tasks of the current attempt.
    pub tasks: BTreeMap<TaskKey, TaskEntry>,
    /// The latest metrics of each task of the current attempt.
    pub metrics: BTreeMap<TaskKey, TaskMetrics>,
}

/// The shared half of a running job: immutable facts, the live view, and the ways to reach the actor.
pub(crate) struct JobShared {
    pub job_id: JobId,
    pub job: Arc<ValidatedJob>,
    live: Mutex<JobLive>,
    pub inbox: mpsc::Sender<JobEvent>,
    /// Notified after a REST handler changed the job's desired state in the store.
    pub desired_changed: Notify,
    /// The checkpoint or savepoint the job's state starts from.
    pub restore: Option<sluice_common::proto::RestoreSpec>,
    /// While a new leader decides whether to adopt the attempt an earlier leader ran: the tasks TaskManagers
    /// report running (see [`adoption`]). None otherwise.
    pub adoption: Mutex<Option<Adoption>>,
    /// Notified when `adoption` changes.
    pub adoption_changed: Notify,
}

impl JobShared {
    pub fn new(
        job_id: JobId,
        job: Arc<ValidatedJob>,
        restore: Option<sluice_common::proto::RestoreSpec>,
    ) -> (Arc<Self>, mpsc::Receiver<JobEvent>) {
        let (inbox, receiver) = mpsc::channel(JOB_INBOX_CAPACITY);
        let live = JobLive {
            status: JobStatus::Created,
            reason: None,
            attempt: Attempt(0),
            failure_cause: None,
            restarts: 0,
            last_recovery_ms: None,
            relocations: 0,
            last_relocation_ms: None,
            end_time_ms: None,
            restored_from: restore.as_ref().map(|r| (r.checkpoint_id, r.dir.clone())),
            up_since_ms: None,
            tasks: BTreeMap::new(),
            metrics: BTreeMap::new(),
        };
        let shared = JobShared {
            job_id,
            job,
            live: Mutex::new(live),
            inbox,
            desired_changed: Notify::new(),
            restore,
            adoption: Mutex::new(None),
            adoption_changed: Notify::new(),
        };
        (Arc::new(shared), receiver)
    }

    /// The live view. Held briefly, never across an `.await`.
    pub fn live(&self) -> MutexGuard<'_, JobLive> {
        // Every writer updates the view in one step, so a poisoned lock still guards a consistent view.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the live view.
    pub fn snapshot(&self) -> JobLive {
        self.live().clone()
    }

    /// Whether messages of `attempt` belong to the current deployment.
    pub fn is_current_attempt(&self, attempt: u32) -> bool {
        let live = self.live();
        live.attempt.0 != 0 && live.attempt.0 == attempt
    }

    /// Keeps `metrics` as the latest of its task, if it belongs to the current attempt and a known task.
    /// Returns whether it was kept.
    pub fn record_metrics(&self, metrics: &TaskMetrics) -> bool {
        let Some(task) = metrics.task.as_ref() else { return false };
        let key = TaskKey::of(task);
        let mut live = self.live();
        if live.attempt.0 == 0 || live.attempt.0 != task.attempt || !live.tasks.contains_key(&key) {
            return false;
        }
        live.metrics.insert(key, metrics.clone());
        true
    }
}

/// The jobs whose actors are running.
#[derive(Default)]
pub(crate) struct JobRegistry {
    jobs: Mutex<HashMap<JobId, Arc<JobShared>>>,
}

impl JobRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Arc<JobShared>>> {
        // Inserts and removes are single steps: a poisoned map is still consistent.
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert(&self, shared: Arc<JobShared>) {
        self.lock().insert(shared.job_id.clone(), shared);
    }

    pub fn get(&self, job_id: &JobId) -> Option<Arc<JobShared>> {
        self.lock().get(job_id).cloned()
    }

    pub fn remove(&self, job_id: &JobId) {
        self.lock().remove(job_id);
    }

    /// Every job whose actor runs.
    pub fn all(&self) -> Vec<Arc<JobShared>> {
        self.lock().values().cloned().collect()
    }

    /// Forgets every job (this JobManager stepped down: their actors have stopped).
    pub fn clear(&self) {
        self.lock().clear();
    }
}
