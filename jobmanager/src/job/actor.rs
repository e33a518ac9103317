//! The job actor: one task per job that drives it through its lifecycle (see [`super::state`]).
//!
//! The actor's body is a loop over the current status; each status has one phase function whose
//! `select!` waits on the actor's inputs (task reports, cluster changes, desired-state changes, a
//! deadline, shutdown) and returns the next transition. The loop applies it: check the edge against the
//! table, log it with its duration, persist it, update the live view. Phases:
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
use sluice_common::ids::{Attempt, ChainIndex, ExecutionId, SubtaskIndex};
use sluice_common::job::checkpoint::CheckpointPolicy;
use sluice_common::job::ValidatedJob;
use sluice_common::proto::{
    CancelTasksRequest, DeployTasksRequest, RestoreSpec, SubtaskPlacement, TaskManagerAddress, TaskState,
    TaskStateReport,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::checkpoints::{plan_restore, task_manager_addresses, Coordinator, Deployment, RetainedCheckpoint, Verdict};
use super::restart::{RestartDecision, Restarts};
use super::state::{check_transition, JobStatus};
use super::task_manager_client::{cancel_tasks, deploy_tasks, TaskManagerCallError};
use super::{JobEvent, JobShared, TaskEntry, TaskKey};
use crate::cluster::{now_ms, HeldSlot, TaskManagerId};
use crate::scheduler::subtask_placements;
use crate::store::StatusUpdate;
use crate::Context;

/// How many times a transition is written to the store before the actor gives up on persisting it (and
/// goes on with the transition in memory, logged as an error).
const STORE_WRITE_ATTEMPTS: u32 = 3;
/// The pause between two attempts to write a transition.
const STORE_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// The next transition a phase decided, with the failure cause when the target is FAILING or FAILED.
struct Next {
    to: JobStatus,
    cause: Option<String>,
}

impl Next {
    fn to(to: JobStatus) -> Self {
        Next { to, cause: None }
    }
    fn failed(to: JobStatus, cause: String) -> Self {
        Next { to, cause: Some(cause) }
    }
}

pub(crate) struct JobActor {
    ctx: Arc<Context>,
    shared: Arc<JobShared>,
    inbox: mpsc::Receiver<JobEvent>,
    restarts: Restarts,
    /// The delay the restart strategy chose for the pending restart.
    restart_delay: Duration,
    /// What the next deployment restores: the submitted savepoint, then the latest checkpoint.
    restore: Option<RestoreSpec>,
    /// When every task of the current attempt was first RUNNING.
    running_since: Option<Instant>,
    /// When the failure being recovered from was detected; cleared once every task runs again.
    failed_at: Option<Instant>,
    status: JobStatus,
    status_since: Instant,
    attempt: Attempt,
    /// Slot j of the job, once allocated.
    slots: Vec<HeldSlot>,
    /// The tasks of the current attempt and their last state.
    tasks: BTreeMap<TaskKey, TaskEntry>,
    /// The checkpoint coordinator, from the first deployment on.
    checkpoints: Option<Coordinator>,
    /// Checkpoints an earlier JobManager retained, handed to the coordinator when it is made.
    adopted: Vec<RetainedCheckpoint>,
}

impl JobActor {
    pub(crate) fn new(ctx: Arc<Context>, shared: Arc<JobShared>, inbox: mpsc::Receiver<JobEvent>) -> Self {
        let checkpoints = checkpoint_policy(&ctx, &shared.job).is_some();
        let restarts = Restarts::new(shared.job.restart_policy(checkpoints));
        let restore = shared.restore.clone();
        JobActor {
            ctx,
            shared,
            inbox,
            restarts,
            restart_delay: Duration::ZERO,
            restore,
            running_since: None,
            failed_at: None,
            status: JobStatus::Created,
            status_since: Instant::now(),
            attempt: Attempt(0),
            slots: Vec::new(),
            tasks: BTreeMap::new(),
            checkpoints: None,
            adopted: Vec::new(),
        }
    }

    /// An actor for a job an earlier JobManager ran: its next attempt follows `attempt` (TaskManagers refuse
    /// older ones), its checkpoints are the ones that JobManager retained, and the time until every task
    /// runs again counts as a recovery.
    pub(crate) fn resumed(
        ctx: Arc<Context>,
        shared: Arc<JobShared>,
        inbox: mpsc::Receiver<JobEvent>,
        attempt: Attempt,
        adopted: Vec<RetainedCheckpoint>,
    ) -> Self {
        let mut actor = JobActor::new(ctx, shared, inbox);
        actor.attempt = attempt;
        actor.adopted = adopted;
        actor.failed_at = Some(Instant::now());
        actor
    }

    /// Drives the job until it ends or the JobManager shuts down.
    pub(crate) async fn run(mut self) {
        tracing::info!(job_id = %self.shared.job_id, status = %self.status, "job actor started");
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
        if from == JobStatus::Running && to != JobStatus::Running {
            if let Some(coordinator) = self.checkpoints.as_mut() {
                coordinator.refuse_queued(&format!("the job is {to}"));
                coordinator.abort(&self.ctx, format!("the job is {to}"), false).await;
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

    async fn persist(&self, update: &StatusUpdate) {
        for attempt in 1..=STORE_WRITE_ATTEMPTS {
            match self.ctx.store.update_status(&self.shared.job_id, update).await {
                Ok(()) => return,
                Err(e) if attempt < STORE_WRITE_ATTEMPTS => {
                    tracing::warn!(job_id = %self.shared.job_id, error = %e, attempt, "cannot record transition; retrying");
                    tokio::time::sleep(STORE_RETRY_BACKOFF).await;
                }
                Err(e) => {
                    tracing::error!(job_id = %self.shared.job_id, error = %e, status = %update.status,
                        "cannot record transition; going on with it in memory only");
                }
            }
        }
    }

    fn set_reason(&self, reason: String) {
        let mut live = self.shared.live();
        if live.reason.as_deref() != Some(reason.as_str()) {
            tracing::info!(job_id = %self.shared.job_id, %reason, "job waiting");
            live.reason = Some(reason);
        }
    }

    async fn cancel_requested(&self) -> bool {
        match self.ctx.store.desired_status(&self.shared.job_id).await {
            Ok(desired) => desired.as_deref() == Some(JobStatus::Canceled.as_str()),
            Err(e) => {
                // Retried on the next wake-up; a cancel request is never lost because it stays in the store.
                tracing::warn!(job_id = %self.shared.job_id, error = %e, "cannot read the desired state");
                false
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // CREATED
    // ---------------------------------------------------------------------------------------------

    async fn created(&mut self) -> Option<Next> {
        if self.cancel_requested().await {
            return Some(Next::to(JobStatus::Canceled));
        }
        match self.wait_for_slots().await? {
            Ok(slots) => self.slots = slots,
            Err(_) if self.cancel_requested().await => return Some(Next::to(JobStatus::Canceled)),
            Err(cause) => return Some(Next::failed(JobStatus::Failed, cause)),
        }
        self.shared.live().reason = None;
        Some(self.deploy().await)
    }

    /// Deploys the next attempt on the allocated slots.
    async fn deploy(&mut self) -> Next {
        let job = self.shared.job.clone();
        let job_id = self.shared.job_id.clone();
        self.attempt = Attempt(self.attempt.0 + 1);
        let execution_id = ExecutionId(rand::random::<u64>());
        let slot_task_managers: Vec<TaskManagerId> = self.slots.iter().map(|s| s.task_manager.clone()).collect();
        let placements = subtask_placements(&job.chains, &slot_task_managers);
        let placements_json = serde_json::to_string(&placements).unwrap_or_else(|_| "[]".to_string());
        if let Err(e) =
            self.ctx.store.record_attempt(&job_id, self.attempt, execution_id, &placements_json, now_ms()).await
        {
            return Next::failed(JobStatus::Failed, format!("cannot record attempt {}: {e}", self.attempt));
        }
        self.tasks = placements
            .iter()
            .map(|p| {
                let key = TaskKey { chain: ChainIndex(p.chain), subtask: SubtaskIndex(p.subtask) };
                let entry =
                    TaskEntry { task_manager: TaskManagerId(p.task_manager_id.clone()), state: TaskState::Deploying };
                (key, entry)
            })
            .collect();
        {
            let mut live = self.shared.live();
            live.attempt = self.attempt;
            live.tasks = self.tasks.clone();
            live.metrics.clear();
        }
        if self.checkpoints.is_none() {
            let last_id = self.ctx.store.max_checkpoint_id(&job_id).await.unwrap_or_else(|e| {
                tracing::warn!(job_id = %job_id, error = %e, "cannot read the last checkpoint id; starting from 0");
                0
            });
            let policy = checkpoint_policy(&self.ctx, &job);
            let dir = self.ctx.checkpoint_storage.child(&job_id.0);
            let mut coordinator = Coordinator::new(job_id.clone(), job.clone(), policy, dir, last_id);
            coordinator.adopt(std::mem::take(&mut self.adopted));
            self.checkpoints = Some(coordinator);
        }
        let requests = self.deploy_requests(execution_id, &placements);
        tracing::info!(job_id = %job_id, attempt = %self.attempt, execution_id = execution_id.0,
            task_managers = requests.len(), tasks = placements.len(), "deploying");
        let results = join_all(requests.into_iter().map(|(slot, request)| async move {
            let result = deploy_tasks(&slot.rpc_address, request).await;
            (slot, result)
        }))
        .await;
        let mut first_error = None;
        for (slot, result) in results {
            let task_manager = slot.task_manager.clone();
            if let Err(e) = result {
                if matches!(e, TaskManagerCallError::Connect { .. }) {
                    self.lose_unreachable(&slot, &e);
                }
                tracing::warn!(job_id = %job_id, %task_manager, error = %e, "deploy failed");
                // Its tasks never started: count them as terminal so FAILING does not wait for them.
                self.mark_tasks_of(&task_manager, TaskState::TaskFailed);
                first_error.get_or_insert(format!("deploying to TaskManager {task_manager} failed: {e}"));
            }
        }
        match first_error {
            Some(cause) => Next::failed(JobStatus::Failing, cause),
            None => Next::to(JobStatus::Running),
        }
    }

    /// One request per TaskManager involved, each carrying the whole execution graph.
    fn deploy_requests(
        &self,
        execution_id: ExecutionId,
        placements: &[SubtaskPlacement],
    ) -> Vec<(HeldSlot, DeployTasksRequest)> {
        let job = &self.shared.job;
        let mut distinct: Vec<HeldSlot> = Vec::new();
        for slot in &self.slots {
            if !distinct.iter().any(|d| d.task_manager == slot.task_manager) {
                distinct.push(slot.clone());
            }
        }
        let task_managers: Vec<TaskManagerAddress> = distinct
            .iter()
            .map(|s| TaskManagerAddress {
                task_manager_id: s.task_manager.0.clone(),
                data_address: s.data_address.clone(),
            })
            .collect();
        distinct
            .into_iter()
            .map(|slot| {
                let request = DeployTasksRequest {
                    job_id: self.shared.job_id.0.clone(),
                    attempt: self.attempt.0,
                    execution_id: execution_id.0,
                    graph: Some(job.graph.clone()),
                    chains: job.chains.clone(),
                    chain_edges: job.chain_edges.clone(),
                    placements: placements.to_vec(),
                    task_managers: task_managers.clone(),
                    checkpoint_dir: self.checkpoints.as_ref().map(|c| c.job_dir.location()).unwrap_or_default(),
                    restore: self.restore.clone(),
                    checkpointing: self.checkpoints.as_ref().is_some_and(Coordinator::is_periodic),
                };
                (slot, request)
            })
            .collect()
    }

    // ---------------------------------------------------------------------------------------------
    // RUNNING
    // ---------------------------------------------------------------------------------------------

    async fn running(&mut self) -> Option<Next> {
        let mut changes = self.ctx.cluster.subscribe();
        loop {
            if let Some(cause) = self.ctx.cluster.lost_cause(&self.slots) {
                return Some(Next::failed(JobStatus::Failing, cause));
            }
            if self.tasks.values().all(|t| t.state == TaskState::TaskFinished) {
                return Some(Next::to(JobStatus::Finished));
            }
            if self.running_since.is_none() && self.tasks.values().all(|t| t.state == TaskState::TaskRunning) {
                self.all_tasks_running();
            }
            if self.cancel_requested().await {
                return Some(Next::to(JobStatus::Cancelling));
            }
            let checkpoint_deadline = self.checkpoints.as_ref().and_then(Coordinator::deadline);
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return None,
                event = self.inbox.recv() => {
                    // The shared handle holds a sender for as long as this actor runs: None is impossible,
                    // but if it came, there would be nothing left to listen to.
                    let event = event?;
                    let (failure, others) = self.apply_events(event);
                    if let Some(cause) = failure {
                        return Some(Next::failed(JobStatus::Failing, cause));
                    }
                    self.tasks_ended_during_checkpoint().await;
                    for event in others {
                        let verdict = self.on_checkpoint_event(event).await;
                        if let Some(next) = self.after_verdict(verdict).await {
                            return Some(next);
                        }
                    }
                }
                _ = sleep_until_opt(checkpoint_deadline) => {
                    let deployment = self.deployment();
                    if let Some(coordinator) = self.checkpoints.as_mut() {
                        let verdict = coordinator.on_deadline(&self.ctx, deployment).await;
                        if let Some(next) = self.after_verdict(verdict).await {
                            return Some(next);
                        }
                    }
                }
                _ = self.shared.desired_changed.notified() => {}
                changed = changes.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// Acts on what the coordinator decided, then starts a request that was waiting, if any. Returns the
    /// transition out of RUNNING when there is one.
    async fn after_verdict(&mut self, mut verdict: Verdict) -> Option<Next> {
        loop {
            match verdict {
                Verdict::FailJob(cause) => return Some(Next::failed(JobStatus::Failing, cause)),
                Verdict::Stop => return Some(self.stop_after_savepoint().await),
                Verdict::Continue => {}
            }
            let deployment = self.deployment();
            let coordinator = self.checkpoints.as_mut()?;
            if !coordinator.has_startable_requests() {
                return None;
            }
            verdict = coordinator.start_queued(&self.ctx, deployment).await;
        }
    }

    /// A stop-with-savepoint completed: the tasks are cancelled (their state is in the savepoint) and the
    /// job ends FINISHED, as in Flink.
    async fn stop_after_savepoint(&mut self) -> Next {
        tracing::info!(job_id = %self.shared.job_id, "savepoint complete; stopping the job");
        self.send_cancels().await;
        let deadline = Instant::now() + self.ctx.settings.cancel_timeout;
        let mut changes = self.ctx.cluster.subscribe();
        while self.pending_tasks() > 0 {
            tokio::select! {
                event = self.inbox.recv() => {
                    let Some(event) = event else { break };
                    for other in self.apply_events(event).1 {
                        if let JobEvent::CheckpointRequest(_, reply) = other {
                            let _ = reply.send(Err("the job is stopping".into()));
                        }
                    }
                }
                changed = changes.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(job_id = %self.shared.job_id, "tasks did not confirm the stop in time; giving up on them");
                    break;
                }
            }
        }
        Next::to(JobStatus::Finished)
    }

    /// Where a checkpoint of the current attempt goes; None unless every task is RUNNING.
    fn deployment(&self) -> Option<Deployment> {
        if self.tasks.is_empty() || self.tasks.values().any(|t| t.state != TaskState::TaskRunning) {
            return None;
        }
        let job = &self.shared.job;
        let fed: BTreeSet<u32> = job.chain_edges.iter().map(|e| e.to_chain).collect();
        let sources: BTreeSet<u32> = job.chains.iter().map(|c| c.index).filter(|c| !fed.contains(c)).collect();
        let (source_task_managers, all_task_managers) = task_manager_addresses(&self.tasks, &sources, |tm| {
            self.slots.iter().find(|s| &s.task_manager == tm).map(|s| s.rpc_address.clone())
        });
        Some(Deployment {
            attempt: self.attempt.0,
            tasks: self.tasks.keys().copied().collect(),
            source_task_managers,
            all_task_managers,
        })
    }

    /// Aborts the pending checkpoint if a task it waits for has ended.
    async fn tasks_ended_during_checkpoint(&mut self) {
        let Some(coordinator) = self.checkpoints.as_mut() else { return };
        let ended: Vec<TaskKey> =
            self.tasks.iter().filter(|(_, t)| is_terminal_task_state(t.state)).map(|(k, _)| *k).collect();
        for key in ended {
            coordinator.on_task_ended(&self.ctx, key).await;
        }
    }

    /// Handles a checkpoint message or request while RUNNING.
    async fn on_checkpoint_event(&mut self, event: JobEvent) -> Verdict {
        let deployment = self.deployment();
        let Some(coordinator) = self.checkpoints.as_mut() else { return Verdict::Continue };
        match event {
            JobEvent::TaskReport(_) => Verdict::Continue,
            JobEvent::CheckpointAck(ack) => match deployment {
                Some(deployment) => coordinator.on_ack(&self.ctx, deployment, ack).await,
                None => Verdict::Continue,
            },
            JobEvent::CheckpointDecline(decline) => {
                coordinator.on_decline(&self.ctx, decline.checkpoint_id, decline.reason).await
            }
            JobEvent::CheckpointRequest(kind, reply) => coordinator.request(&self.ctx, deployment, kind, reply).await,
        }
    }

    /// Applies the task reports among `first` and whatever else is already queued (drained in one go).
    /// Returns the cause of the first task failure among them, and the other events, in order.
    fn apply_events(&mut self, first: JobEvent) -> (Option<String>, Vec<JobEvent>) {
        let mut failure = None;
        let mut others = Vec::new();
        let mut event = Some(first);
        // Bounded by the inbox capacity: try_recv only returns what is already queued.
        let mut budget = super::JOB_INBOX_CAPACITY;
        while let Some(next) = event.take() {
            match next {
                JobEvent::TaskReport(report) => {
                    if let Some(cause) = self.apply_report(report) {
                        failure.get_or_insert(cause);
                    }
                }
                other => others.push(other),
            }
            budget -= 1;
            if budget > 0 {
                event = self.inbox.try_recv().ok();
            }
        }
        (failure, others)
    }

    /// Records a task's new state. Returns the failure cause if the task failed.
    fn apply_report(&mut self, report: TaskStateReport) -> Option<String> {
        let task = report.task.as_ref()?;
        if task.attempt != self.attempt.0 {
            tracing::debug!(job_id = %self.shared.job_id, attempt = task.attempt, "ignoring report of another attempt");
            return None;
        }
        let key = TaskKey::of(task);
        let state = report.state();
        let Some(entry) = self.tasks.get_mut(&key) else {
            tracing::warn!(job_id = %self.shared.job_id, chain = task.chain, subtask = task.subtask, "report of an unknown task");
            return None;
        };
        if is_terminal_task_state(entry.state) {
            return None;
        }
        entry.state = state;
        let task_manager = entry.task_manager.clone();
        {
            let mut live = self.shared.live();
            if let Some(live_entry) = live.tasks.get_mut(&key) {
                live_entry.state = state;
            }
        }
        if let Some(metrics) = report.metrics.as_ref() {
            self.shared.record_metrics(metrics);
        }
        tracing::debug!(job_id = %self.shared.job_id, chain = task.chain, subtask = task.subtask, state = state.as_str_name(), "task report");
        let what = match state {
            TaskState::TaskFailed => format!("failed: {}", report.error),
            // Only this JobManager cancels tasks while the job runs, and it leaves RUNNING first: a task
            // cancelled otherwise (its TaskManager registered anew, say) is lost to the attempt.
            TaskState::TaskCanceled if self.status == JobStatus::Running => "was cancelled there".to_string(),
            _ => return None,
        };
        let vertices = self.chain_vertices(task.chain);
        Some(format!(
            "task {vertices} (chain {}, subtask {}) on TaskManager {task_manager} {what}",
            task.chain, task.subtask
        ))
    }

    fn chain_vertices(&self, chain: u32) -> String {
        self.shared
            .job
            .chains
            .iter()
            .find(|c| c.index == chain)
            .map(|c| c.vertex_ids.join(" -> "))
            .unwrap_or_else(|| format!("chain {chain}"))
    }

    fn mark_tasks_of(&mut self, task_manager: &TaskManagerId, state: TaskState) {
        let mut live = self.shared.live();
        for (key, entry) in self.tasks.iter_mut().filter(|(_, e)| &e.task_manager == task_manager) {
            if !is_terminal_task_state(entry.state) {
                entry.state = state;
                if let Some(live_entry) = live.tasks.get_mut(key) {
                    live_entry.state = state;
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // FAILING / CANCELLING
    // ---------------------------------------------------------------------------------------------

    /// Cancels every task and waits (bounded) until all are terminal or their TaskManager is gone.
    async fn draining(&mut self, target: JobStatus) -> Option<Next> {
        self.send_cancels().await;
        let deadline = Instant::now() + self.ctx.settings.cancel_timeout;
        let mut changes = self.ctx.cluster.subscribe();
        loop {
            let pending = self.pending_tasks();
            if pending == 0 {
                break;
            }
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return None,
                event = self.inbox.recv() => {
                    let event = event?;
                    // Failures while draining add nothing: the job is already failing or cancelling. Checkpoint
                    // requests get their answer; acknowledgements are for an aborted checkpoint.
                    for other in self.apply_events(event).1 {
                        if let JobEvent::CheckpointRequest(_, reply) = other {
                            let _ = reply.send(Err(format!("the job is {}", self.status)));
                        }
                    }
                }
                changed = changes.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(job_id = %self.shared.job_id, pending, timeout_ms = self.ctx.settings.cancel_timeout.as_millis() as u64,
                        "tasks did not confirm cancellation in time; giving up on them");
                    break;
                }
            }
        }
        if target == JobStatus::Failed {
            return Some(self.after_failure());
        }
        Some(Next::to(target))
    }

    /// Asks the restart strategy what follows the failure that took the job to FAILING.
    fn after_failure(&mut self) -> Next {
        let cause = self.shared.live().failure_cause.clone().unwrap_or_default();
        match self.restarts.on_failure(Instant::now(), self.running_since) {
            RestartDecision::Restart { delay } => {
                tracing::warn!(job_id = %self.shared.job_id, attempt = %self.attempt, strategy = self.restarts.name(),
                    delay_ms = delay.as_millis() as u64, %cause, "restarting the job");
                self.restart_delay = delay;
                Next::to(JobStatus::Restarting)
            }
            RestartDecision::Fail(why) => Next::failed(JobStatus::Failed, format!("{cause} (not restarted: {why})")),
        }
    }

    /// Notes that every task of the current attempt runs; ends a recovery in progress.
    fn all_tasks_running(&mut self) {
        let now = Instant::now();
        self.running_since = Some(now);
        self.shared.live().up_since_ms = Some(now_ms());
        if let Some(failed_at) = self.failed_at.take() {
            let took = now.saturating_duration_since(failed_at);
            self.ctx.metrics.recovery_duration.with_label_values(&[&self.shared.job_id.0]).observe(took.as_secs_f64());
            self.shared.live().last_recovery_ms = Some(took.as_millis() as u64);
            tracing::info!(job_id = %self.shared.job_id, attempt = %self.attempt, duration_ms = took.as_millis() as u64,
                "recovered: every task runs again");
        }
    }

    // ---------------------------------------------------------------------------------------------
    // RESTARTING
    // ---------------------------------------------------------------------------------------------

    /// Waits the restart delay, takes slots again and deploys the next attempt from the latest checkpoint.
    async fn restarting(&mut self) -> Option<Next> {
        let job_id = self.shared.job_id.clone();
        // The old attempt's tasks are gone or cancelled; its slots go back so that the new attempt can take
        // the best ones, on whichever TaskManagers are alive now.
        self.ctx.cluster.release(&job_id);
        self.slots.clear();
        self.tasks.clear();
        self.running_since = None;
        self.ctx.metrics.restarts.with_label_values(&[&job_id.0]).inc();
        {
            let mut live = self.shared.live();
            live.restarts += 1;
            live.tasks.clear();
            live.metrics.clear();
        }
        let mut delay = self.restart_delay;
        loop {
            self.set_reason(format!("restarting in {} ms", delay.as_millis()));
            let wake = Instant::now() + delay;
            loop {
                if self.cancel_requested().await {
                    return Some(Next::to(JobStatus::Cancelling));
                }
                tokio::select! {
                    _ = self.ctx.shutdown.cancelled() => return None,
                    _ = self.shared.desired_changed.notified() => {}
                    _ = tokio::time::sleep_until(wake) => break,
                }
            }
            match self.wait_for_slots().await? {
                Ok(slots) => {
                    self.slots = slots;
                    break;
                }
                Err(_) if self.cancel_requested().await => return Some(Next::to(JobStatus::Cancelling)),
                Err(cause) => match self.restarts.on_failure(Instant::now(), None) {
                    RestartDecision::Restart { delay: next } => {
                        tracing::warn!(job_id = %job_id, %cause, delay_ms = next.as_millis() as u64, "restart postponed");
                        self.shared.live().failure_cause = Some(cause);
                        delay = next;
                    }
                    RestartDecision::Fail(why) => {
                        return Some(Next::failed(JobStatus::Failed, format!("{cause} (not restarted: {why})")));
                    }
                },
            }
        }
        self.shared.live().reason = None;
        if let Some(coordinator) = self.checkpoints.as_mut() {
            coordinator.on_restart();
        }
        if let Some(restore) = self.latest_restore_point().await {
            self.shared.live().restored_from = Some((restore.checkpoint_id, restore.dir.clone()));
            self.restore = Some(restore);
        }
        Some(self.deploy().await)
    }

    /// Waits (bounded by the job's slot wait timeout) until the job's slots can be allocated. None on
    /// shutdown; Err with the cause when the slots did not come, or a cancel was requested meanwhile.
    async fn wait_for_slots(&mut self) -> Option<Result<Vec<HeldSlot>, String>> {
        let job = self.shared.job.clone();
        let needed = job.slots_needed();
        let timeout = job.slot_wait_timeout();
        let deadline = Instant::now() + timeout;
        let mut changes = self.ctx.cluster.subscribe();
        loop {
            match self.ctx.cluster.allocate(&self.shared.job_id, needed, job.placement()) {
                Ok(slots) => return Some(Ok(slots)),
                Err(not_enough) => self.set_reason(not_enough.to_string()),
            }
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return None,
                _ = self.shared.desired_changed.notified() => {
                    if self.cancel_requested().await {
                        return Some(Err("cancelled while waiting for slots".to_string()));
                    }
                }
                changed = changes.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(deadline) => {
                    let (available, _) = self.ctx.cluster.slot_counts();
                    return Some(Err(format!(
                        "could not get {needed} slots within {} s ({available} available)", timeout.as_secs_f64()
                    )));
                }
            }
        }
    }

    /// The newest retained checkpoint whose files are all there. A newer one that cannot be used is
    /// skipped with a warning naming what is wrong; None keeps what the job restored from before.
    async fn latest_restore_point(&mut self) -> Option<RestoreSpec> {
        let job = self.shared.job.clone();
        let candidates = self.checkpoints.as_ref().map(Coordinator::restore_candidates).unwrap_or_default();
        for (id, location) in candidates {
            match plan_restore(&location, &job).await {
                Ok(spec) => {
                    tracing::info!(job_id = %self.shared.job_id, checkpoint = id, %location, "restoring from checkpoint");
                    return Some(spec);
                }
                Err(e) => {
                    tracing::warn!(job_id = %self.shared.job_id, checkpoint = id, error = %e,
                        "cannot restore from this checkpoint; trying the previous retained one");
                }
            }
        }
        None
    }

    /// A TaskManager that refuses connections has no process behind its address: it is marked lost now
    /// (its tasks stop counting as pending) rather than after the heartbeat timeout.
    fn lose_unreachable(&self, slot: &HeldSlot, error: &TaskManagerCallError) {
        if self.ctx.cluster.mark_unreachable(slot, "its control address refuses connections") {
            self.ctx.metrics.task_managers_lost.inc();
            tracing::warn!(job_id = %self.shared.job_id, task_manager = %slot.task_manager, %error, "TaskManager lost");
        }
    }

    /// Tasks that are neither terminal nor on a TaskManager incarnation that is gone.
    fn pending_tasks(&self) -> usize {
        let gone: BTreeSet<&TaskManagerId> =
            self.slots.iter().filter(|s| !self.ctx.cluster.is_active(s)).map(|s| &s.task_manager).collect();
        self.tasks.values().filter(|t| !is_terminal_task_state(t.state) && !gone.contains(&t.task_manager)).count()
    }

    async fn send_cancels(&self) {
        if self.attempt.0 == 0 {
            return;
        }
        let mut seen = BTreeSet::new();
        let targets: Vec<&HeldSlot> =
            self.slots.iter().filter(|s| self.ctx.cluster.is_active(s) && seen.insert(&s.task_manager)).collect();
        let request = CancelTasksRequest { job_id: self.shared.job_id.0.clone(), attempt: self.attempt.0 };
        let results = join_all(targets.iter().map(|slot| {
            let request = request.clone();
            async move { (*slot, cancel_tasks(&slot.rpc_address, request).await) }
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

    // ---------------------------------------------------------------------------------------------
    // Terminal
    // ---------------------------------------------------------------------------------------------

    async fn finish(&mut self) {
        let job_id = self.shared.job_id.clone();
        // Ends the deployment on every TaskManager: for a FINISHED job this releases its network channels
        // (every consumer has received everything), for the others it repeats the cancel.
        self.send_cancels().await;
        self.ctx.cluster.release(&job_id);
        if let Some(mut coordinator) = self.checkpoints.take() {
            coordinator.on_job_end(&self.ctx, self.status == JobStatus::Failed).await;
        }
        self.ctx.metrics.remove_job(&job_id.0);
        let metrics: Vec<_> = self.shared.live().metrics.values().cloned().collect();
        match serde_json::to_string(&metrics) {
            Ok(json) => {
                if let Err(e) = self.ctx.store.save_final_metrics(&job_id, &json).await {
                    tracing::warn!(job_id = %job_id, error = %e, "cannot store the final metrics");
                }
            }
            Err(e) => tracing::warn!(job_id = %job_id, error = %e, "cannot encode the final metrics"),
        }
        self.ctx.jobs.remove(&job_id);
        tracing::info!(job_id = %job_id, status = %self.status, "job ended");
    }
}

/// Whether a task will not change state any more.
pub(crate) fn is_terminal_task_state(state: TaskState) -> bool {
    match state {
        TaskState::TaskFinished | TaskState::TaskFailed | TaskState::TaskCanceled => true,
        TaskState::Unspecified | TaskState::Deploying | TaskState::TaskRunning => false,
    }
}

/// The job's checkpoint policy: its own, else the JobManager's CHECKPOINT_INTERVAL; None when off.
fn checkpoint_policy(ctx: &Context, job: &ValidatedJob) -> Option<CheckpointPolicy> {
    job.checkpoint_policy().or_else(|| ctx.settings.checkpoint_interval.and_then(CheckpointPolicy::with_interval))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
