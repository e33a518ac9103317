//! The job actor: one task per job that drives it through its lifecycle (see [`sluice_common::lifecycle::job`]).
//!
//! The actor's body is a loop over the current status; each status has one phase function, in its own file
//! under [`super::states`], whose `select!` waits on the actor's inputs (task reports, cluster changes,
//! desired-state changes, a deadline, shutdown) and returns the next transition. The loop (here) applies
//! it: check the edge against the table, log it with its duration, persist it, update the live view.
//! Phases:
//! 1. CREATED: take `slots_needed` slots atomically (waiting, bounded by the job's slot wait timeout),
//!    then deploy attempt 1 to every TaskManager involved → RUNNING, or FAILING if a deploy failed.
//! 2. RUNNING: follow task reports and TaskManager losses until every task finished (→ FINISHED), a task
//!    failed or a TaskManager was lost (→ FAILING), or a cancel was requested (→ CANCELLING).
//! 3. FAILING / CANCELLING: cancel every task, wait (bounded by the cancel timeout) until every task is
//!    terminal or its TaskManager is gone, then CANCELED, or ask the restart strategy: RESTARTING or FAILED.
//! 4. RESTARTING: release the slots, wait the strategy's delay, take slots again (a TaskManager that
//!    restarted offers fresh ones), and deploy the next attempt from the latest completed checkpoint
//!    (falling back to an older retained one if its files are gone) → RUNNING, or FAILING.
//! 5. Terminal: release the slots, store the final metrics, leave the registry.
//!
//! On shutdown the actor returns wherever it is; the job stays unfinished in the store, and the next
//! JobManager deals with it ([`super::recovery`]).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use sluice_common::ids::Attempt;
use sluice_common::job::checkpoint::CheckpointPolicy;
use sluice_common::job::ValidatedJob;
use sluice_common::lifecycle::job::{check_transition, DesiredStatus, JobStatus};
use sluice_common::lifecycle::task;
use sluice_common::proto::{CancelTasksRequest, RestoreSpec, TaskState};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::restart::Restarts;
use super::{JobEvent, JobShared, TaskEntry, TaskKey};
use crate::checkpoint::{Coordinator, RetainedCheckpoint};
use crate::cluster::{now_ms, HeldSlot, TaskManagerId};
use crate::store::StatusUpdate;
use crate::task_manager_client::TaskManagerCallError;
use crate::Context;

/// How many times a transition to a non-terminal status is written to the store before the actor gives up on
/// persisting it (and goes on with the transition in memory, logged as an error: the job's next transition
/// records the state again). A terminal status is retried until it lands (see `persist`).
const STORE_WRITE_ATTEMPTS: u32 = 3;
/// The first pause between two attempts to write a transition; it doubles up to [`STORE_RETRY_BACKOFF_MAX`].
const STORE_RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// The pause before a cancel that failed other than by a refused connection is sent once more.
const CANCEL_PROBE_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between two attempts to write a terminal status.
const STORE_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The next transition a phase decided, with the failure cause when the target is FAILING or FAILED.
pub(in crate::job) struct Next {
    to: JobStatus,
    cause: Option<String>,
}

impl Next {
    pub(in crate::job) fn to(to: JobStatus) -> Self {
        Next { to, cause: None }
    }
    pub(in crate::job) fn failed(to: JobStatus, cause: String) -> Self {
        Next { to, cause: Some(cause) }
    }
}

pub(crate) struct JobActor {
    pub(in crate::job) ctx: Arc<Context>,
    pub(in crate::job) shared: Arc<JobShared>,
    pub(in crate::job) inbox: mpsc::Receiver<JobEvent>,
    pub(in crate::job) restarts: Restarts,
    /// The delay the restart strategy chose for the pending restart.
    pub(in crate::job) restart_delay: Duration,
    /// What the next deployment restores: the submitted savepoint, then the latest checkpoint.
    pub(in crate::job) restore: Option<RestoreSpec>,
    /// When every task of the current attempt was first RUNNING.
    pub(in crate::job) running_since: Option<Instant>,
    /// When the failure being recovered from was detected; cleared once every task runs again.
    pub(in crate::job) failed_at: Option<Instant>,
    /// The failure being recovered from, for the exception history (`super::exceptions`); cleared once the
    /// new attempt caught up.
    pub(in crate::job) recovery: Option<super::exceptions::RecoveryClock>,
    /// Where the failure about to be recorded came from: set with its cause, taken by the transition.
    pub(in crate::job) failure_origin: Option<super::exceptions::FailureOrigin>,
    /// When a TaskManager the job runs on said it is leaving, while the job moves off it (see
    /// `states::running`); cleared once every task runs again elsewhere, or when the job fails instead.
    pub(in crate::job) moving_since: Option<Instant>,
    /// The next RESTARTING is a redeployment that is no failure: no restart strategy, no delay.
    pub(in crate::job) redeploying: bool,
    /// This attempt asked for a drain checkpoint (it ends with a redeployment, whatever becomes of it).
    pub(in crate::job) drain_requested: bool,
    pub(in crate::job) status: JobStatus,
    pub(in crate::job) status_since: Instant,
    pub(in crate::job) attempt: Attempt,
    /// Slot j of the job, once allocated.
    pub(in crate::job) slots: Vec<HeldSlot>,
    /// The tasks of the current attempt and their last state.
    pub(in crate::job) tasks: BTreeMap<TaskKey, TaskEntry>,
    /// The checkpoint coordinator, from the first deployment on.
    pub(in crate::job) checkpoints: Option<Coordinator>,
    /// Checkpoints an earlier JobManager retained, handed to the coordinator when it is made.
    pub(in crate::job) adopted: Vec<RetainedCheckpoint>,
    /// For a job an earlier JobManager ran: its completed checkpoints (id, location; newest first), read
    /// and chosen from before the first deployment (`restore_point`).
    pub(in crate::job) taken_over: Option<Vec<(u64, String)>>,
    /// For a job an earlier leader left RUNNING: the attempt to adopt before anything else (`states::adopting`).
    pub(in crate::job) adopting: Option<super::states::adopting::PendingAdoption>,
    /// Ends this actor: the end of the leader's term it runs in (shutdown, or this JobManager stepped down).
    /// The job stays as the store has it, for the next leader.
    pub(in crate::job) stop: tokio_util::sync::CancellationToken,
}
impl JobActor {
    pub(crate) fn new(ctx: Arc<Context>, shared: Arc<JobShared>, inbox: mpsc::Receiver<JobEvent>) -> Self {
        let checkpoints = checkpoint_policy(&ctx, &shared.job).is_some();
        let restarts = Restarts::new(shared.job.restart_policy(checkpoints));
        let restore = shared.restore.clone();
        let stop = ctx.leadership.term_stop();
        JobActor {
            ctx,
            shared,
            inbox,
            restarts,
            restart_delay: Duration::ZERO,
            restore,
            running_since: None,
            failed_at: None,
            recovery: None,
            failure_origin: None,
            moving_since: None,
            redeploying: false,
            drain_requested: false,
            status: JobStatus::Created,
            status_since: Instant::now(),
            attempt: Attempt(0),
            slots: Vec::new(),
            tasks: BTreeMap::new(),
            checkpoints: None,
            adopted: Vec::new(),
            taken_over: None,
            adopting: None,
            stop,
        }
    }

    /// An actor for a job an earlier leader left RUNNING: it adopts that attempt if its tasks all report in,
    /// else takes the job over as [`JobActor::resumed`] does.
    pub(crate) fn adopting(
        ctx: Arc<Context>,
        shared: Arc<JobShared>,
        inbox: mpsc::Receiver<JobEvent>,
        pending: super::states::adopting::PendingAdoption,
    ) -> Self {
        let mut actor = JobActor::new(ctx, shared, inbox);
        actor.attempt = pending.attempt;
        actor.status = JobStatus::Running;
        actor.adopting = Some(pending);
        actor
    }

    /// An actor for a job an earlier JobManager ran: its next attempt follows `attempt` (TaskManagers refuse
    /// older ones), its checkpoints are the ones that JobManager retained, and the time until every task
    /// runs again counts as a recovery.
    pub(crate) fn resumed(
        ctx: Arc<Context>,
        shared: Arc<JobShared>,
        inbox: mpsc::Receiver<JobEvent>,
        attempt: Attempt,
        completed: Vec<(u64, String)>,
    ) -> Self {
        let mut actor = JobActor::new(ctx, shared, inbox);
        actor.attempt = attempt;
        actor.taken_over = Some(completed);
        actor.failed_at = Some(Instant::now());
        actor
    }

    /// Drives the job until it ends or the JobManager shuts down.
    pub(crate) async fn run(mut self) {
        tracing::info!(job_id = %self.shared.job_id, status = %self.status, "job actor started");
        if let Some(pending) = self.adopting.take() {
            if self.adopt(pending).await.is_none() {
                tracing::info!(job_id = %self.shared.job_id, "job actor stopped: the leader's term ended");
                return;
            }
        }
        loop {
            let next = match self.status {
                JobStatus::Created => self.created().await,
                JobStatus::Running => self.running().await,
                JobStatus::Failing => self.draining(JobStatus::Failed).await,
                JobStatus::Cancelling => self.draining(JobStatus::Canceled).await,
                JobStatus::Restarting => self.restarting().await,
                JobStatus::Suspended => Some(Next::failed(
                    JobStatus::Failed,
                    format!("internal error: the actor does not drive {} yet", self.status),
                )),
                JobStatus::Failed | JobStatus::Canceled | JobStatus::Finished => break,
            };
            let Some(next) = next else {
                tracing::info!(job_id = %self.shared.job_id, status = %self.status, "job actor stopped by shutdown");
                return;
            };
            self.transition(next).await;
            if self.stop.is_cancelled() {
                // The term ended (maybe before the transition was recorded): nothing more of this job is done
                // here, least of all the end of a job (deleting its checkpoints) the store may not record.
                tracing::info!(job_id = %self.shared.job_id, status = %self.status, "job actor stopped: the leader's term ended");
                return;
            }
        }
        self.finish().await;
    }

    /// Applies a transition: checked against the table, logged, persisted, published.
    async fn transition(&mut self, next: Next) {
        let Next { mut to, mut cause } = next;
        if let Err(illegal) = check_transition(self.status, to) {
            // A bug in a phase. Failing this job is right; crashing the JobManager is not.
            tracing::error!(job_id = %self.shared.job_id, %illegal, "refusing an illegal transition; failing the job");
            to = JobStatus::Failed;
            cause = Some(format!("internal error: {illegal}"));
        }
        let from = self.status;
        if to != JobStatus::Running {
            self.shared.live().up_since_ms = None;
        }
        if to == JobStatus::Failing && self.failed_at.is_none() {
            self.failed_at = Some(Instant::now());
        }
        if from == JobStatus::Running {
            self.drain_requested = false;
        }
        if !matches!(to, JobStatus::Restarting | JobStatus::Running) {
            // The move became a failure (or the job ends): its stall is not measured as a move's.
            self.moving_since = None;
        }
        if from == JobStatus::Running && to != JobStatus::Running {
            if let Some(coordinator) = self.checkpoints.as_mut() {
                coordinator.refuse_queued(&format!("the job is {to}"));
                coordinator.abort(format!("the job is {to}"), false).await;
            }
        }
        let duration_ms = self.status_since.elapsed().as_millis() as u64;
        tracing::info!(job_id = %self.shared.job_id, %from, %to, duration_ms, cause = cause.as_deref().unwrap_or(""), "job transition");
        let now = now_ms();
        let update = StatusUpdate {
            status: to,
            at_ms: now,
            end_time_ms: to.is_terminal().then_some(now),
            failure_cause: cause.clone(),
        };
        self.persist(&update).await;
        match (to, cause.as_deref()) {
            (JobStatus::Failing | JobStatus::Failed, Some(cause)) => self.note_failure(to, cause).await,
            (JobStatus::Restarting, _) if from == JobStatus::Failing => self.note_restart().await,
            (to, _) if to.is_terminal() => self.recovery = None,
            _ => {}
        }
        {
            let mut live = self.shared.live();
            live.status = to;
            live.end_time_ms = update.end_time_ms;
            live.reason = None;
            if cause.is_some() {
                live.failure_cause = cause;
            }
        }
        self.ctx.metrics.transitions.with_label_values(&[to.as_str()]).inc();
        self.status = to;
        self.status_since = Instant::now();
    }

    /// Writes a transition to the store. A terminal status (FINISHED, CANCELED, FAILED) is retried until it
    /// lands or the JobManager stops: lost in a database outage, it would make the next JobManager run the job
    /// again. The job's status reason says why it waits. Other statuses get [`STORE_WRITE_ATTEMPTS`] tries.
    async fn persist(&self, update: &StatusUpdate) {
        let terminal = update.status.is_terminal();
        let mut backoff = STORE_RETRY_BACKOFF;
        let mut attempt: u32 = 0;
        // Ends when the write lands, when a non-terminal status ran out of attempts, or at shutdown.
        loop {
            attempt = attempt.saturating_add(1);
            let error = match self.ctx.store.update_status(&self.shared.job_id, update).await {
                Ok(()) => return,
                Err(e) => e,
            };
            if !terminal && attempt >= STORE_WRITE_ATTEMPTS {
                tracing::error!(job_id = %self.shared.job_id, %error, status = %update.status,
                    "cannot record transition; going on with it in memory only");
                return;
            }
            tracing::warn!(job_id = %self.shared.job_id, %error, attempt, status = %update.status,
                "cannot record transition; retrying");
            if terminal {
                self.set_reason(format!("cannot record {} in the metadata store ({error}); retrying", update.status));
            }
            tokio::select! {
                _ = self.stop.cancelled() => {
                    tracing::warn!(job_id = %self.shared.job_id, status = %update.status,
                        "the JobManager stops before the transition was recorded; the next one takes the job over");
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(STORE_RETRY_BACKOFF_MAX);
        }
    }

    pub(in crate::job) fn set_reason(&self, reason: String) {
        let mut live = self.shared.live();
        if live.reason.as_deref() != Some(reason.as_str()) {
            tracing::info!(job_id = %self.shared.job_id, %reason, "job waiting");
            live.reason = Some(reason);
        }
    }

    pub(in crate::job) async fn cancel_requested(&self) -> bool {
        match self.ctx.store.desired_status(&self.shared.job_id).await {
            Ok(desired) => desired == Some(DesiredStatus::Canceled),
            Err(e) => {
                // Retried on the next wake-up; a cancel request is never lost because it stays in the store.
                tracing::warn!(job_id = %self.shared.job_id, error = %e, "cannot read the desired state");
                false
            }
        }
    }

    pub(in crate::job) fn mark_tasks_of(&mut self, task_manager: &TaskManagerId, state: TaskState) {
        let mut live = self.shared.live();
        for (key, entry) in self.tasks.iter_mut().filter(|(_, e)| &e.task_manager == task_manager) {
            if !task::is_terminal(entry.state) {
                entry.state = state;
                if let Some(live_entry) = live.tasks.get_mut(key) {
                    live_entry.state = state;
                }
            }
        }
    }

    /// A TaskManager that refuses connections has no process behind its address: it is marked lost now
    /// (its tasks stop counting as pending) rather than after the heartbeat timeout.
    pub(in crate::job) fn lose_unreachable(&self, slot: &HeldSlot, error: &TaskManagerCallError) {
        if self.ctx.cluster.mark_unreachable(slot, "its control address refuses connections") {
            self.ctx.metrics.task_managers_lost.inc();
            tracing::warn!(job_id = %self.shared.job_id, task_manager = %slot.task_manager, %error, "TaskManager lost");
        }
    }

    /// Tasks that are neither terminal nor on a TaskManager incarnation that is gone.
    pub(in crate::job) fn pending_tasks(&self) -> usize {
        let gone: BTreeSet<&TaskManagerId> =
            self.slots.iter().filter(|s| !self.ctx.cluster.is_active(s)).map(|s| &s.task_manager).collect();
        self.tasks.values().filter(|t| !task::is_terminal(t.state) && !gone.contains(&t.task_manager)).count()
    }

    pub(in crate::job) async fn send_cancels(&self) {
        if self.attempt.0 == 0 {
            return;
        }
        let mut seen = BTreeSet::new();
        let targets: Vec<&HeldSlot> =
            self.slots.iter().filter(|s| self.ctx.cluster.is_active(s) && seen.insert(&s.task_manager)).collect();
        let request = CancelTasksRequest { job_id: self.shared.job_id.0.clone(), attempt: self.attempt.0 };
        let results = join_all(targets.iter().map(|slot| {
            let request = request.clone();
            async move {
                let client = &self.ctx.task_managers;
                let mut result = client.cancel_tasks(&slot.rpc_address, request.clone()).await;
                if matches!(&result, Err(TaskManagerCallError::Status { code, .. })
                    if matches!(code, tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled))
                {
                    // A call that broke mid-way (a TaskManager killed as it accepted the connection) says nothing
                    // of whether it lives; asked once more, a dead one refuses the connection and is lost at
                    // once instead of after the heartbeat timeout. Cancelling twice is harmless.
                    tokio::time::sleep(CANCEL_PROBE_PAUSE).await;
                    result = client.cancel_tasks(&slot.rpc_address, request).await;
                }
                (*slot, result)
            }
        }))
        .await;
        for (slot, result) in results {
            match result {
                Ok(()) => {}
                Err(e @ TaskManagerCallError::Connect { .. }) => self.lose_unreachable(slot, &e),
                Err(e) => {
                    // Its tasks stay pending until they report, the TaskManager is lost, or the cancel timeout.
                    tracing::warn!(job_id = %self.shared.job_id, task_manager = %slot.task_manager, error = %e, "cancel failed");
                }
            }
        }
    }

    /// Notes that every task of the current attempt runs; ends a recovery or a move in progress.
    pub(in crate::job) fn all_tasks_running(&mut self) {
        let now = Instant::now();
        self.running_since = Some(now);
        self.shared.live().up_since_ms = Some(now_ms());
        if let Some(since) = self.moving_since.take() {
            let took = now.saturating_duration_since(since);
            self.ctx
                .metrics
                .relocation_duration
                .with_label_values(&[&self.shared.job_id.0])
                .observe(took.as_secs_f64());
            self.shared.live().last_relocation_ms = Some(took.as_millis() as u64);
            tracing::info!(job_id = %self.shared.job_id, attempt = %self.attempt, duration_ms = took.as_millis() as u64,
                "moved: every task runs again, off the leaving TaskManager");
        }
        if let Some(failed_at) = self.failed_at.take() {
            let took = now.saturating_duration_since(failed_at);
            self.ctx.metrics.recovery_duration.with_label_values(&[&self.shared.job_id.0]).observe(took.as_secs_f64());
            self.shared.live().last_recovery_ms = Some(took.as_millis() as u64);
            tracing::info!(job_id = %self.shared.job_id, attempt = %self.attempt, duration_ms = took.as_millis() as u64,
                "recovered: every task runs again");
        }
    }
}

/// The job's checkpoint policy: its own, else the JobManager's CHECKPOINT_INTERVAL; None when off.
pub(in crate::job) fn checkpoint_policy(ctx: &Context, job: &ValidatedJob) -> Option<CheckpointPolicy> {
    job.checkpoint_policy().or_else(|| ctx.settings.checkpoint_interval.and_then(CheckpointPolicy::with_interval))
}

pub(in crate::job) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
