//! Before the first phase of a job an earlier leader left RUNNING: adopt its attempt, or redeploy it.
//!
//! The actor waits until TaskManagers re-registering with this leader have reported every task of the
//! attempt the store records (see [`crate::job::adoption`]). Then it takes the slots those tasks use, continues
//! checkpoints after the last id the store has, tells the TaskManagers that the newest completed checkpoint
//! completed (sinks commit what it covers, if the old leader died before telling them), and goes on RUNNING:
//! no task was stopped, no restart counted. If the wait runs out, a task of the attempt ended or failed
//! meanwhile, or a TaskManager that reported some was lost, it cancels the tasks found and takes the job over
//! the way a restarted JobManager always did: CREATED, then the next attempt from the latest checkpoint.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sluice_common::ids::{Attempt, ChainIndex, ExecutionId, SubtaskIndex};
use sluice_common::lifecycle::job::JobStatus;
use sluice_common::proto::{CancelTasksRequest, NotifyCheckpointCompleteRequest, TaskState};
use tokio::time::Instant;

use crate::checkpoint::RetainedCheckpoint;
use crate::cluster::{now_ms, TaskManagerId};
use crate::job::actor::JobActor;
use crate::job::recovery::JOBMANAGER_RESTARTED;
use crate::job::restore_point::Interrupted;
use crate::job::{FoundTask, TaskEntry, TaskKey};
use crate::store::StatusUpdate;

/// How long a new leader waits for the tasks of an attempt beyond the heartbeat timeout: TaskManagers notice the
/// old leader is gone after their heartbeat timeout, then find this one (trying each JobManager address, with
/// a back-off of at most `REGISTER_BACKOFF_MAX` in the TaskManager).
pub(crate) const ADOPTION_WAIT_EXTRA: Duration = Duration::from_secs(5);
/// How often the wait also looks whether a TaskManager that reported tasks was lost meanwhile.
const ADOPTION_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A job an earlier leader left RUNNING, to adopt or redeploy.
pub(crate) struct PendingAdoption {
    /// The attempt the store records.
    pub attempt: Attempt,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// Moves so far (the store's count).
    pub relocations: u32,
    /// Its completed checkpoints (id, location), newest first.
    pub completed: Vec<(u64, String)>,
    /// Told when the decision is made (the takeover's duration ends with the last one).
    pub decided: Option<tokio::sync::oneshot::Sender<()>>,
}

impl JobActor {
    /// Adopts the attempt of `pending` (the actor is RUNNING after) or prepares its redeployment (CREATED).
    /// None when the term ended first.
    pub(in crate::job) async fn adopt(&mut self, mut pending: PendingAdoption) -> Option<()> {
        let job_id = self.shared.job_id.clone();
        let expected: BTreeSet<TaskKey> = self
            .shared
            .job
            .chains
            .iter()
            .flat_map(|chain| {
                (0..chain.parallelism).map(|s| TaskKey { chain: ChainIndex(chain.index), subtask: SubtaskIndex(s) })
            })
            .collect();
        let wait = self.ctx.settings.heartbeat_timeout + ADOPTION_WAIT_EXTRA;
        let deadline = Instant::now() + wait;
        self.set_reason(format!(
            "adopting attempt {} from the previous leader: waiting for its TaskManagers to report its {} tasks",
            pending.attempt,
            expected.len()
        ));
        let outcome: Result<BTreeMap<TaskKey, FoundTask>, String> = loop {
            let changed = self.shared.adoption_changed.notified();
            let (found, spoiled) = self.shared.adoption_so_far();
            if let Some(why) = spoiled {
                break Err(why);
            }
            let lost = found.values().find(|f| !self.ctx.cluster.is_registered(&f.task_manager, f.incarnation));
            if let Some(lost) = lost {
                break Err(format!("TaskManager {} was lost while its tasks were being adopted", lost.task_manager));
            }
            if expected.iter().all(|key| found.contains_key(key)) {
                break Ok(found);
            }
            tokio::select! {
                _ = self.stop.cancelled() => {
                    self.shared.close_adoption();
                    return None;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let reported = expected.iter().filter(|key| found.contains_key(key)).count();
                    break Err(format!(
                        "{reported} of its {} tasks were reported within {} ms",
                        expected.len(),
                        wait.as_millis()
                    ));
                }
                _ = changed => {}
                _ = tokio::time::sleep(ADOPTION_CHECK_INTERVAL) => {}
            }
        };
        // Registrations go on adding to the adoption (and their TaskManagers keep the tasks) until it closes,
        // once the job's tasks are published or the adoption failed: a report in between is not refused.
        let result = match outcome {
            Ok(_) => match self.take_adopted(&pending).await {
                Some(result) => result,
                None => {
                    self.shared.close_adoption();
                    self.ctx.cluster.release(&job_id);
                    return None;
                }
            },
            Err(why) => Err(why),
        };
        let last = self.shared.close_adoption();
        let spoiled = last.as_ref().and_then(|a| a.spoiled.clone());
        let found = last.map(|a| a.found).unwrap_or_default();
        let result = match (result, spoiled) {
            (Ok(()), Some(why)) => {
                // A task ended or failed after the tasks were taken: undo, and redeploy.
                self.forget_adopted();
                Err(why)
            }
            (result, _) => result,
        };
        let result = result.map_err(|why| (why, found));
        let decided = pending.decided.take();
        match result {
            Ok(()) => {
                tracing::info!(job_id = %job_id, attempt = %pending.attempt, execution_id = pending.execution_id.0,
                    tasks = expected.len(), "adopted the running attempt of the previous leader: no task was restarted");
            }
            Err((why, found)) => {
                tracing::warn!(job_id = %job_id, attempt = %pending.attempt, reason = %why,
                    "cannot adopt the running attempt of the previous leader; restarting it from its latest checkpoint");
                self.ctx.cluster.release(&job_id);
                self.cancel_found(&pending, &found).await;
                self.redeploy_after_takeover(pending, &why).await;
            }
        }
        if let Some(decided) = decided {
            let _ = decided.send(());
        }
        Some(())
    }

    /// Makes the found tasks (as the still open adoption has them) the job's current attempt: slots, tasks,
    /// checkpoints, the live view. Err when their slots are not all reserved (a TaskManager registered anew, or was
    /// lost), a task of the attempt ended meanwhile, or a cancel came while checkpoint storage was waited for;
    /// None when the term ended.
    async fn take_adopted(&mut self, pending: &PendingAdoption) -> Option<Result<(), String>> {
        // The tasks run meanwhile; a wait for storage shows in the job's reason.
        let retained = match self.read_retained(&pending.completed).await {
            Ok(retained) => retained,
            Err(Interrupted::Shutdown) => return None,
            Err(Interrupted::Cancel) => return Some(Err("a cancel was requested".into())),
        };
        let (found, spoiled) = self.shared.adoption_so_far();
        if let Some(why) = spoiled {
            return Some(Err(why));
        }
        Some(self.take_slots_and_tasks(pending, &found, retained).await)
    }

    /// Undoes [`JobActor::take_slots_and_tasks`] (before a redeployment).
    fn forget_adopted(&mut self) {
        self.checkpoints = None;
        self.tasks.clear();
        self.slots.clear();
        let mut live = self.shared.live();
        live.tasks.clear();
        live.status = JobStatus::Created;
    }

    async fn take_slots_and_tasks(
        &mut self,
        pending: &PendingAdoption,
        found: &BTreeMap<TaskKey, FoundTask>,
        retained: Vec<RetainedCheckpoint>,
    ) -> Result<(), String> {
        let job_id = self.shared.job_id.clone();
        // The running tasks write their snapshots where the old leader told them; this leader's checkpoints go
        // to its own storage. They must be the same (every JobManager of a store shares CHECKPOINT_DIR), else
        // the next checkpoint's `_metadata` would name files elsewhere: redeploy instead, from the old location.
        let own = self.ctx.checkpoint_storage.child(&job_id.0).location();
        if let Some((id, location)) = pending.completed.first() {
            if !location.starts_with(&own) {
                return Err(format!(
                    "its checkpoint {id} is in {location}, outside this JobManager's checkpoint storage {own}: \
                     every JobManager of one metadata store must have the same CHECKPOINT_DIR"
                ));
            }
        }
        // The registrations reserved each TaskManager's slots for the tasks it reported (`rpc::adoptable`).
        let slots = self.ctx.cluster.held_by(&job_id);
        let holders: BTreeSet<(TaskManagerId, u64)> =
            found.values().map(|f| (f.task_manager.clone(), f.incarnation)).collect();
        for (task_manager, incarnation) in &holders {
            if !slots.iter().any(|s| &s.task_manager == task_manager && s.incarnation == *incarnation) {
                return Err(format!(
                    "TaskManager {task_manager} registered anew or was lost while its tasks were adopted"
                ));
            }
        }
        self.adopted = retained;
        self.slots = slots;
        self.attempt = pending.attempt;
        if let Err(why) = self.make_coordinator().await {
            self.slots.clear();
            return Err(why);
        }
        self.tasks = found
            .iter()
            .map(|(key, at)| {
                let entry = TaskEntry {
                    state: TaskState::TaskRunning,
                    ..TaskEntry::deployed(at.task_manager.clone(), at.incarnation)
                };
                (*key, entry)
            })
            .collect();
        {
            let mut live = self.shared.live();
            live.status = JobStatus::Running;
            live.attempt = self.attempt;
            live.tasks = self.tasks.clone();
            live.metrics.clear();
            live.relocations = pending.relocations;
            live.restarts = pending.attempt.0.saturating_sub(1).saturating_sub(pending.relocations);
            live.reason = None;
            if let Some((id, location)) = pending.completed.first() {
                live.restored_from.get_or_insert((*id, location.clone()));
            }
        }
        self.status = JobStatus::Running;
        self.status_since = Instant::now();
        self.all_tasks_running();
        // Sinks commit what the newest completed checkpoint covers: the old leader may have died between
        // recording it and telling them. Telling twice is harmless.
        if let Some((checkpoint_id, _)) = pending.completed.first() {
            let request = NotifyCheckpointCompleteRequest {
                job_id: job_id.0.clone(),
                attempt: self.attempt.0,
                checkpoint_id: *checkpoint_id,
            };
            let addresses: BTreeSet<String> = self.slots.iter().map(|s| s.rpc_address.clone()).collect();
            let client = self.ctx.task_managers.clone();
            let notified = job_id.clone();
            self.ctx.leadership.spawn(async move {
                for address in addresses {
                    if let Err(e) = client.notify_checkpoint_complete(&address, request.clone()).await {
                        tracing::warn!(job_id = %notified, error = %e, "cannot notify a TaskManager of the newest completed checkpoint");
                    }
                }
            });
        }
        Ok(())
    }

    /// Cancels the tasks of the attempt that TaskManagers reported and kept (they must not run on beside the
    /// next attempt).
    async fn cancel_found(&self, pending: &PendingAdoption, found: &BTreeMap<TaskKey, FoundTask>) {
        let targets: BTreeSet<(TaskManagerId, u64)> =
            found.values().map(|f| (f.task_manager.clone(), f.incarnation)).collect();
        let request = CancelTasksRequest { job_id: self.shared.job_id.0.clone(), attempt: pending.attempt.0 };
        for (task_manager, incarnation) in targets {
            let Some(address) = self.ctx.cluster.rpc_address_of(&task_manager, incarnation) else { continue };
            if let Err(e) = self.ctx.task_managers.cancel_tasks(&address, request.clone()).await {
                tracing::warn!(job_id = %self.shared.job_id, %task_manager, error = %e,
                    "cannot cancel the reported tasks of an attempt that was not adopted");
            }
        }
    }

    /// Prepares the takeover a restarted JobManager always did: CREATED, the next attempt after the recorded
    /// one, from the latest usable checkpoint.
    async fn redeploy_after_takeover(&mut self, pending: PendingAdoption, why: &str) {
        let now = now_ms();
        let update = StatusUpdate { status: JobStatus::Created, at_ms: now, end_time_ms: None, failure_cause: None };
        if let Err(e) = self.ctx.store.update_status(&self.shared.job_id, &update).await {
            tracing::warn!(job_id = %self.shared.job_id, error = %e, "cannot record CREATED; going on in memory");
        }
        self.status = JobStatus::Created;
        self.status_since = Instant::now();
        self.attempt = pending.attempt;
        self.taken_over = Some(pending.completed);
        self.failed_at = Some(Instant::now());
        let mut live = self.shared.live();
        live.status = JobStatus::Created;
        live.restarts = pending.attempt.0.saturating_sub(pending.relocations);
        live.relocations = pending.relocations;
        live.failure_cause = Some(format!("{JOBMANAGER_RESTARTED}; {why}"));
        live.reason = None;
    }
}
