//! RUNNING: follow task reports and TaskManager losses until every task finished (→ FINISHED), a task
//! failed or a TaskManager was lost (→ FAILING), or a cancel was requested (→ CANCELLING). Checkpoint
//! events go to the coordinator, whose verdict may fail the job or stop it after a savepoint.
//!
//! A TaskManager the job runs on that is leaving (SIGTERM: a drained node, a deleted pod) moves the job
//! (→ RESTARTING, no failure): a drain checkpoint whose sources stop at their barrier and whose sinks commit,
//! then every task is cancelled and the next attempt is deployed from that checkpoint on the other
//! TaskManagers. Nothing is lost (the checkpoint covers everything emitted) and nothing is duplicated (nothing
//! is processed after the barrier). Without checkpoints, or if the drain checkpoint fails, the job moves from
//! its latest checkpoint, as after a failure but without asking the restart strategy.
use std::collections::BTreeSet;

use sluice_common::lifecycle::job::JobStatus;
use sluice_common::lifecycle::{task, FailureKind};
use sluice_common::proto::{TaskState, TaskStateReport};
use tokio::time::Instant;

use crate::checkpoint::{Coordinator, Kind, Verdict};
use crate::deployment::{task_manager_addresses, Deployment, TaskEntry};
use crate::job::actor::{sleep_until_opt, JobActor, Next};
use crate::job::exceptions::FailureOrigin;
use crate::job::{JobEvent, TaskKey};

impl JobActor {
    pub(in crate::job) async fn running(&mut self) -> Option<Next> {
        let mut changes = self.ctx.cluster.subscribe();
        loop {
            if let Some(lost) = self.ctx.cluster.lost(&self.slots) {
                self.failure_origin = Some(FailureOrigin {
                    task: None,
                    task_manager: Some(lost.task_manager.0),
                    silent_for: lost.silent_for,
                    kind: None,
                });
                return Some(Next::failed(JobStatus::Failing, lost.cause));
            }
            if let Some(next) = self.move_off_leaving().await {
                return Some(next);
            }
            if self.tasks.values().all(|t| t.state == TaskState::TaskFinished) {
                return Some(Next::to(JobStatus::Finished));
            }
            if self.running_since.is_none() && self.tasks.values().all(|t| t.state == TaskState::TaskRunning) {
                self.all_tasks_running();
                self.note_running_again().await;
            }
            self.note_checkpoint_progress().await;
            if self.cancel_requested().await {
                return Some(Next::to(JobStatus::Cancelling));
            }
            let checkpoint_deadline = self.checkpoints.as_ref().and_then(Coordinator::deadline);
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                event = self.inbox.recv() => {
                    // The shared handle holds a sender for as long as this actor runs: None is impossible,
                    // but if it came, there would be nothing left to listen to.
                    let event = event?;
                    let (failure, others) = self.apply_events(event);
                    if let Some((cause, origin)) = failure {
                        self.failure_origin = Some(origin);
                        return Some(Next::failed(JobStatus::Failing, cause));
                    }
                    let verdict = self.tasks_ended_during_checkpoint().await;
                    if let Some(next) = self.after_verdict(verdict).await {
                        return Some(next);
                    }
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
                        let verdict = coordinator.on_deadline(deployment).await;
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
    pub(in crate::job) async fn after_verdict(&mut self, mut verdict: Verdict) -> Option<Next> {
        loop {
            match verdict {
                Verdict::FailJob(cause) => return Some(Next::failed(JobStatus::Failing, cause)),
                Verdict::Stop => return Some(self.stop_after_savepoint().await),
                Verdict::Redeploy(why) => return Some(self.redeploy(&why).await),
                Verdict::Continue => {}
            }
            let deployment = self.deployment();
            let coordinator = self.checkpoints.as_mut()?;
            if !coordinator.has_startable_requests() {
                return None;
            }
            verdict = coordinator.start_queued(deployment).await;
        }
    }

    /// Starts or finishes moving the job off a TaskManager that is leaving: the first time one of its
    /// TaskManagers is, a drain checkpoint; once none is in flight or queued any more (it failed, or could not
    /// start), the redeployment. Returns the transition out of RUNNING when there is one.
    async fn move_off_leaving(&mut self) -> Option<Next> {
        if self.drain_requested {
            if self.checkpoints.as_ref().is_some_and(Coordinator::drain_in_progress) {
                return None;
            }
            return Some(self.redeploy("the checkpoint before the move did not complete").await);
        }
        let leaving = self.ctx.cluster.leaving_among(&self.slots)?;
        self.moving_since.get_or_insert_with(Instant::now);
        let deployment = self.deployment();
        if self.checkpoints.is_none() || deployment.is_none() {
            let why = format!(
                "TaskManager {leaving} is leaving; no checkpoint can be taken first (the job takes none, or a \
                 task is neither running nor finished)"
            );
            return Some(self.redeploy(&why).await);
        }
        tracing::info!(job_id = %self.shared.job_id, task_manager = %leaving,
            "a TaskManager of the job is leaving: a checkpoint, then the job moves off it");
        self.set_reason(format!("TaskManager {leaving} is leaving: checkpointing before moving off it"));
        let coordinator = self.checkpoints.as_mut()?;
        // The answer tells only whether it started; what follows comes as a verdict, here or when it ends.
        let (reply, _started) = tokio::sync::oneshot::channel();
        self.drain_requested = true;
        let verdict = coordinator.request(deployment, Kind::Drain, reply).await;
        if let Some(next) = self.after_verdict(verdict).await {
            return Some(next);
        }
        if !self.checkpoints.as_ref().is_some_and(Coordinator::drain_in_progress) {
            // It could not start (the store did not record it, a source's TaskManager refused the trigger): move
            // now rather than at the next wake-up.
            return Some(self.redeploy("the checkpoint before the move could not start").await);
        }
        None
    }

    /// Cancels every task and moves to RESTARTING for a redeployment that is no failure: the restart strategy
    /// is not asked, and there is no delay.
    pub(in crate::job) async fn redeploy(&mut self, why: &str) -> Next {
        tracing::info!(job_id = %self.shared.job_id, attempt = %self.attempt, why, "redeploying the job");
        if self.moving_since.is_none() {
            // Not a move (a stop-with-savepoint that failed after its sources stopped): it counts as a restart,
            // and its recovery is measured as one.
            self.failed_at.get_or_insert_with(Instant::now);
            self.shared.live().failure_cause = Some(why.to_string());
        }
        self.cancel_and_wait("the job is being redeployed").await;
        self.redeploying = true;
        Next::to(JobStatus::Restarting)
    }

    /// A stop-with-savepoint completed: the tasks are cancelled (their state is in the savepoint) and the
    /// job ends FINISHED, as in Flink.
    pub(in crate::job) async fn stop_after_savepoint(&mut self) -> Next {
        tracing::info!(job_id = %self.shared.job_id, "savepoint complete; stopping the job");
        self.cancel_and_wait("the job is stopping").await;
        Next::to(JobStatus::Finished)
    }

    /// Cancels every task and waits (bounded by the cancel timeout) until each is terminal or its TaskManager
    /// gone; checkpoint requests meanwhile are refused with `refusal`.
    async fn cancel_and_wait(&mut self, refusal: &str) {
        self.send_cancels().await;
        let deadline = Instant::now() + self.ctx.settings.cancel_timeout;
        let mut changes = self.ctx.cluster.subscribe();
        while self.pending_tasks() > 0 {
            tokio::select! {
                event = self.inbox.recv() => {
                    let Some(event) = event else { break };
                    for other in self.apply_events(event).1 {
                        if let JobEvent::CheckpointRequest(_, reply) = other {
                            let _ = reply.send(Err(refusal.into()));
                        }
                    }
                }
                changed = changes.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(job_id = %self.shared.job_id, "tasks did not confirm their cancellation in time; giving up on them");
                    break;
                }
            }
        }
    }

    /// Where a checkpoint of the current attempt goes; None unless every task is RUNNING or FINISHED and one
    /// still runs. Finished tasks take no part (Flink's FLIP-147); see [`Deployment::finished`].
    pub(in crate::job) fn deployment(&self) -> Option<Deployment> {
        let running = |t: &TaskEntry| t.state == TaskState::TaskRunning;
        let finished = |t: &TaskEntry| t.state == TaskState::TaskFinished;
        if !self.tasks.values().any(running) || !self.tasks.values().all(|t| running(t) || finished(t)) {
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
            tasks: self.tasks.iter().filter(|(_, t)| running(t)).map(|(k, _)| *k).collect(),
            finished: self.tasks.iter().filter(|(_, t)| finished(t)).map(|(k, t)| (*k, t.last_checkpoint)).collect(),
            source_task_managers,
            all_task_managers,
        })
    }

    /// Tells the pending checkpoint of the tasks that have ended ([`Coordinator::on_task_ended`]); the verdict
    /// of the first that aborts it.
    pub(in crate::job) async fn tasks_ended_during_checkpoint(&mut self) -> Verdict {
        let deployment = self.deployment();
        let Some(coordinator) = self.checkpoints.as_mut() else { return Verdict::Continue };
        let ended: Vec<(TaskKey, Option<u64>)> = self
            .tasks
            .iter()
            .filter(|(_, t)| task::is_terminal(t.state))
            .map(|(k, t)| (*k, (t.state == TaskState::TaskFinished).then_some(t.last_checkpoint)))
            .collect();
        for (key, finished_after) in ended {
            let verdict = coordinator.on_task_ended(key, finished_after, deployment.clone()).await;
            if verdict != Verdict::Continue {
                return verdict;
            }
        }
        Verdict::Continue
    }

    /// Handles a checkpoint message or request while RUNNING.
    pub(in crate::job) async fn on_checkpoint_event(&mut self, event: JobEvent) -> Verdict {
        let deployment = self.deployment();
        let Some(coordinator) = self.checkpoints.as_mut() else { return Verdict::Continue };
        match event {
            JobEvent::TaskReport(_) => Verdict::Continue,
            JobEvent::CheckpointAck(ack) => match deployment {
                Some(deployment) => coordinator.on_ack(deployment, ack).await,
                None => Verdict::Continue,
            },
            JobEvent::CheckpointDecline(decline) => coordinator.on_decline(decline.checkpoint_id, decline.reason).await,
            JobEvent::CheckpointRequest(kind, reply) => coordinator.request(deployment, kind, reply).await,
        }
    }

    /// Applies the task reports among `first` and whatever else is already queued (drained in one go).
    /// Returns the cause and origin of the first task failure among them, and the other events, in order.
    pub(in crate::job) fn apply_events(&mut self, first: JobEvent) -> (Option<(String, FailureOrigin)>, Vec<JobEvent>) {
        let mut failure = None;
        let mut others = Vec::new();
        let mut event = Some(first);
        // Bounded by the inbox capacity: try_recv only returns what is already queued.
        let mut budget = crate::job::JOB_INBOX_CAPACITY;
        while let Some(next) = event.take() {
            match next {
                JobEvent::TaskReport(report) => {
                    if let Some(failed) = self.apply_report(report) {
                        failure.get_or_insert(failed);
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

    /// Records a task's new state. Returns the failure's cause and origin if the task failed.
    pub(in crate::job) fn apply_report(&mut self, report: TaskStateReport) -> Option<(String, FailureOrigin)> {
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
        if !task::can_follow(entry.state, state) {
            // A terminal task stays terminal; a report that would move a task back is stale or forged.
            if !task::is_terminal(entry.state) {
                tracing::warn!(job_id = %self.shared.job_id, chain = task.chain, subtask = task.subtask,
                    from = entry.state.as_str_name(), to = state.as_str_name(), "ignoring a task report that moves back");
            }
            return None;
        }
        entry.state = state;
        if state == TaskState::TaskFinished {
            entry.last_checkpoint = report.last_checkpoint;
        }
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
        let which = format!("{vertices} (chain {}, subtask {})", task.chain, task.subtask);
        let cause = format!("task {which} on TaskManager {task_manager} {what}");
        let kind = match state {
            TaskState::TaskFailed => FailureKind::from_proto(report.failure_kind),
            _ => None,
        };
        let origin = FailureOrigin {
            task: Some(which),
            task_manager: Some(task_manager.0),
            silent_for: Default::default(),
            kind,
        };
        Some((cause, origin))
    }

    pub(in crate::job) fn chain_vertices(&self, chain: u32) -> String {
        self.shared
            .job
            .chains
            .iter()
            .find(|c| c.index == chain)
            .map(|c| c.vertex_ids.join(" -> "))
            .unwrap_or_else(|| format!("chain {chain}"))
    }
}
