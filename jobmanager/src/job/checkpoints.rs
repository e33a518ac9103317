//! The checkpoint coordinator of one job (ARCHITECTURE.md §7), driven by the job's actor while it runs.
//!
//! A checkpoint goes: trigger (a row IN_PROGRESS in the store, then TriggerCheckpoint to every TaskManager
//! with a source task) → every task acknowledges with its snapshot file → the row becomes COMPLETED (one
//! statement) → every TaskManager is told, so sinks may commit. A decline, a timeout, a task that ends, or
//! a store that cannot record the checkpoint aborts it: the row becomes FAILED and its directory is
//! deleted. Only one checkpoint is in flight at a time; consecutive failures beyond the job's tolerance
//! fail the job.
//!
//! Retention: the newest `retained` completed checkpoints keep their files; an older one is deleted once a
//! newer one completes. When the job is cancelled or finishes, its checkpoints are deleted unless it asked
//! to retain them; a failed job keeps them (they are what it would be restored from).
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;
use sluice_common::ids::JobId;
use sluice_common::job::checkpoint::{CheckpointPolicy, CHECKPOINT_TIMEOUT_MS_DEFAULT};
use sluice_common::proto::{AcknowledgeCheckpointRequest, NotifyCheckpointCompleteRequest, TriggerCheckpointRequest};
use tokio::time::Instant;

use super::task_manager_client::{notify_checkpoint_complete, trigger_checkpoint};
use super::TaskKey;
use crate::cluster::now_ms;
use crate::store::CompletedCheckpoint;
use crate::Context;

pub(crate) const KIND_CHECKPOINT: &str = "CHECKPOINT";

/// A checkpoint in flight.
struct Pending {
    id: u64,
    attempt: u32,
    trigger_ms: u64,
    deadline: Instant,
    dir: PathBuf,
    /// Tasks that have not acknowledged yet.
    waiting: BTreeSet<TaskKey>,
    acks: Vec<AcknowledgeCheckpointRequest>,
}

/// One task's acknowledgement, as stored in the checkpoint's `tasks_json`.
#[derive(Serialize)]
struct TaskAck<'a> {
    chain: u32,
    subtask: u32,
    state_file: &'a str,
    state_size_bytes: u64,
    alignment_ms: u64,
    sync_ms: u64,
    async_ms: u64,
}

/// What the actor must do after the coordinator handled something.
pub(crate) enum Verdict {
    /// Nothing more.
    Continue,
    /// Too many consecutive checkpoints failed: fail the job with this cause.
    FailJob(String),
}

/// Where a trigger goes: the TaskManagers with source tasks of the current attempt.
pub(crate) struct Deployment {
    pub attempt: u32,
    /// Every task of the attempt (each must acknowledge).
    pub tasks: Vec<TaskKey>,
    /// RPC addresses of the TaskManagers running source tasks.
    pub source_task_managers: Vec<String>,
    /// RPC addresses of every TaskManager of the attempt.
    pub all_task_managers: Vec<String>,
}

pub(crate) struct Coordinator {
    job_id: JobId,
    /// The periodic policy; None: checkpoints only when a user asks.
    policy: Option<CheckpointPolicy>,
    /// The job's checkpoint directory (`chk-N/` under it).
    pub job_dir: PathBuf,
    last_id: u64,
    pending: Option<Pending>,
    /// When the next periodic checkpoint is due.
    next_trigger: Option<Instant>,
    consecutive_failures: u32,
    /// Completed checkpoints whose files are kept, oldest first.
    retained: VecDeque<(u64, PathBuf)>,
}

impl Coordinator {
    pub(crate) fn new(job_id: JobId, policy: Option<CheckpointPolicy>, job_dir: PathBuf, last_id: u64) -> Self {
        let next_trigger = policy.as_ref().map(|p| Instant::now() + p.interval);
        Self {
            job_id,
            policy,
            job_dir,
            last_id,
            pending: None,
            next_trigger,
            consecutive_failures: 0,
            retained: VecDeque::new(),
        }
    }

    /// The next moment the coordinator has something to do: a periodic trigger, or a pending timeout.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.pending {
            Some(pending) => Some(pending.deadline),
            None => self.next_trigger,
        }
    }

    fn timeout(&self) -> Duration {
        self.policy.as_ref().map_or(Duration::from_millis(CHECKPOINT_TIMEOUT_MS_DEFAULT), |p| p.timeout)
    }

    fn schedule_next(&mut self, trigger: Option<Instant>) {
        self.next_trigger = self.policy.as_ref().map(|p| {
            let earliest = Instant::now() + p.min_pause;
            trigger.map_or(earliest, |t| (t + p.interval).max(earliest))
        });
    }

    /// The deadline passed: times out the pending checkpoint, or triggers the periodic one (when every
    /// task runs; otherwise it is skipped and retried an interval later).
    pub(crate) async fn on_deadline(&mut self, ctx: &Context, deployment: Option<Deployment>) -> Verdict {
        let now = Instant::now();
        if let Some(pending) = &self.pending {
            if pending.deadline <= now {
                let reason = format!(
                    "checkpoint {} expired after {} ms before every task acknowledged ({} missing)",
                    pending.id,
                    self.timeout().as_millis(),
                    pending.waiting.len()
                );
                return self.abort(ctx, reason, true).await;
            }
            return Verdict::Continue;
        }
        if self.next_trigger.is_none_or(|t| t > now) {
            return Verdict::Continue;
        }
        let Some(deployment) = deployment else {
            tracing::debug!("skipping a periodic checkpoint: not every task is running");
            self.schedule_next(Some(now));
            return Verdict::Continue;
        };
        match self.trigger(ctx, deployment).await {
            Ok(_) => Verdict::Continue,
            Err((verdict, _)) => verdict,
        }
    }

    /// Starts a checkpoint now. Its id, or why none started (and whether that failed the job).
    pub(crate) async fn trigger(&mut self, ctx: &Context, deployment: Deployment) -> Result<u64, (Verdict, String)> {
        if let Some(pending) = &self.pending {
            return Err((Verdict::Continue, format!("checkpoint {} is in progress", pending.id)));
        }
        let id = self.last_id + 1;
        self.last_id = id;
        let trigger_ms = now_ms();
        let dir = self.job_dir.join(format!("chk-{id}"));
        let location = dir.display().to_string();
        let job_id = &self.job_id.clone();
        if let Err(e) =
            ctx.store.insert_checkpoint(job_id, id, deployment.attempt, KIND_CHECKPOINT, trigger_ms, &location).await
        {
            let reason = format!("cannot record checkpoint {id}: {e}");
            tracing::warn!(job_id = %job_id, %reason, "checkpoint not started");
            self.schedule_next(Some(Instant::now()));
            return Err((self.count_failure(ctx, job_id, &reason), reason));
        }
        self.pending = Some(Pending {
            id,
            attempt: deployment.attempt,
            trigger_ms,
            deadline: Instant::now() + self.timeout(),
            dir,
            waiting: deployment.tasks.iter().copied().collect(),
            acks: Vec::new(),
        });
        tracing::info!(job_id = %job_id, checkpoint = id, "triggering a checkpoint");
        let request = TriggerCheckpointRequest {
            job_id: job_id.0.clone(),
            attempt: deployment.attempt,
            checkpoint_id: id,
            timestamp_ms: trigger_ms,
        };
        let results = join_all(
            deployment.source_task_managers.iter().map(|address| trigger_checkpoint(address, request.clone())),
        )
        .await;
        if let Some(error) = results.into_iter().find_map(Result::err) {
            let reason = format!("cannot trigger checkpoint {id}: {error}");
            let verdict = self.abort(ctx, reason.clone(), true).await;
            return Err((verdict, reason));
        }
        Ok(id)
    }

    /// A task acknowledged. When it was the last one, the checkpoint completes.
    pub(crate) async fn on_ack(
        &mut self,
        ctx: &Context,
        deployment: Deployment,
        ack: AcknowledgeCheckpointRequest,
    ) -> Verdict {
        let Some(task) = ack.task.as_ref() else { return Verdict::Continue };
        let key = TaskKey::of(task);
        let Some(pending) = self.pending.as_mut() else { return Verdict::Continue };
        if pending.id != ack.checkpoint_id || pending.attempt != task.attempt || !pending.waiting.remove(&key) {
            return Verdict::Continue; // An aborted checkpoint, or a repeated acknowledgement.
        }
        pending.acks.push(ack);
        if !pending.waiting.is_empty() {
            return Verdict::Continue;
        }
        let Some(pending) = self.pending.take() else { return Verdict::Continue };
        self.complete(ctx, deployment, pending).await
    }

    async fn complete(&mut self, ctx: &Context, deployment: Deployment, pending: Pending) -> Verdict {
        let job_id = &self.job_id.clone();
        let end_ms = now_ms();
        let max = |f: fn(&AcknowledgeCheckpointRequest) -> u64| pending.acks.iter().map(f).max().unwrap_or(0);
        let tasks: Vec<TaskAck> = pending
            .acks
            .iter()
            .map(|a| TaskAck {
                chain: a.task.as_ref().map_or(0, |t| t.chain),
                subtask: a.task.as_ref().map_or(0, |t| t.subtask),
                state_file: &a.state_file,
                state_size_bytes: a.state_size_bytes,
                alignment_ms: a.alignment_ms,
                sync_ms: a.sync_ms,
                async_ms: a.async_ms,
            })
            .collect();
        let done = CompletedCheckpoint {
            end_ms,
            state_size_bytes: pending.acks.iter().map(|a| a.state_size_bytes).sum(),
            alignment_ms: max(|a| a.alignment_ms),
            sync_ms: max(|a| a.sync_ms),
            async_ms: max(|a| a.async_ms),
            tasks_json: serde_json::to_string(&tasks).unwrap_or_else(|_| "[]".into()),
        };
        let trigger = Instant::now() - Duration::from_millis(end_ms.saturating_sub(pending.trigger_ms));
        match ctx.store.complete_checkpoint(job_id, pending.id, &done).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                let reason = format!("cannot record checkpoint {} as completed", pending.id);
                tracing::warn!(job_id = %job_id, %reason);
                self.pending = Some(pending);
                return self.abort(ctx, reason, true).await;
            }
        }
        let duration_ms = end_ms.saturating_sub(pending.trigger_ms);
        tracing::info!(job_id = %job_id, checkpoint = pending.id, duration_ms, size = done.state_size_bytes,
            alignment_ms = done.alignment_ms, sync_ms = done.sync_ms, async_ms = done.async_ms, "checkpoint completed");
        ctx.metrics.checkpoint_duration.with_label_values(&[job_id.0.as_str()]).observe(duration_ms as f64 / 1000.0);
        ctx.metrics
            .checkpoint_size
            .with_label_values(&[job_id.0.as_str()])
            .set(i64::try_from(done.state_size_bytes).unwrap_or(i64::MAX));
        ctx.metrics.checkpoints.with_label_values(&[job_id.0.as_str(), "completed"]).inc();
        self.consecutive_failures = 0;
        self.schedule_next(Some(trigger));

        // Tell the tasks (sinks commit), without holding up the actor.
        let request = NotifyCheckpointCompleteRequest {
            job_id: job_id.0.clone(),
            attempt: pending.attempt,
            checkpoint_id: pending.id,
        };
        let addresses = deployment.all_task_managers;
        let notified_job = job_id.clone();
        tokio::spawn(async move {
            for address in addresses {
                if let Err(e) = notify_checkpoint_complete(&address, request.clone()).await {
                    tracing::warn!(job_id = %notified_job, error = %e, "cannot notify a TaskManager of a completed checkpoint");
                }
            }
        });

        self.retained.push_back((pending.id, pending.dir));
        let keep = self.policy.as_ref().map_or(1, |p| p.retained) as usize;
        while self.retained.len() > keep {
            let Some((id, dir)) = self.retained.pop_front() else { break };
            delete_dir(dir).await;
            if let Err(e) = ctx.store.discard_checkpoint(job_id, id).await {
                tracing::warn!(job_id = %job_id, checkpoint = id, error = %e, "cannot record a discarded checkpoint");
            }
        }
        Verdict::Continue
    }

    /// A task declined the pending checkpoint.
    pub(crate) async fn on_decline(&mut self, ctx: &Context, checkpoint_id: u64, reason: String) -> Verdict {
        if self.pending.as_ref().is_none_or(|p| p.id != checkpoint_id) {
            return Verdict::Continue;
        }
        self.abort(ctx, format!("checkpoint {checkpoint_id} declined: {reason}"), true).await
    }

    /// A task ended: the pending checkpoint cannot complete without it (not the checkpoint's fault, so it
    /// does not count towards the tolerable failures).
    pub(crate) async fn on_task_ended(&mut self, ctx: &Context, task: TaskKey) {
        if self.pending.as_ref().is_some_and(|p| p.waiting.contains(&task)) {
            let id = self.pending.as_ref().map_or(0, |p| p.id);
            let reason = format!("checkpoint {id} aborted: a task ended before it took its part");
            self.abort(ctx, reason, false).await;
        }
    }

    /// Aborts the pending checkpoint (if any): FAILED in the store, its files deleted.
    pub(crate) async fn abort(&mut self, ctx: &Context, reason: String, counts: bool) -> Verdict {
        let Some(pending) = self.pending.take() else { return Verdict::Continue };
        let trigger = Instant::now() - Duration::from_millis(now_ms().saturating_sub(pending.trigger_ms));
        self.schedule_next(Some(trigger));
        delete_dir(pending.dir).await;
        let job_id = &self.job_id.clone();
        tracing::warn!(job_id = %job_id, checkpoint = pending.id, %reason, "checkpoint failed");
        if let Err(e) = ctx.store.fail_checkpoint(job_id, pending.id, now_ms(), &reason).await {
            tracing::warn!(job_id = %job_id, checkpoint = pending.id, error = %e, "cannot record a failed checkpoint");
        }
        if counts {
            self.count_failure(ctx, job_id, &reason)
        } else {
            Verdict::Continue
        }
    }

    fn count_failure(&mut self, ctx: &Context, job_id: &JobId, reason: &str) -> Verdict {
        ctx.metrics.checkpoints.with_label_values(&[job_id.0.as_str(), "failed"]).inc();
        self.consecutive_failures += 1;
        let tolerable = self.policy.as_ref().map_or(u32::MAX, |p| p.tolerable_failures);
        if self.consecutive_failures > tolerable {
            Verdict::FailJob(format!(
                "{} consecutive checkpoints failed, more than the {tolerable} tolerated; the last: {reason}",
                self.consecutive_failures
            ))
        } else {
            Verdict::Continue
        }
    }

    /// The job ended: aborts what is in flight and deletes the job's checkpoints unless they are kept
    /// (a failed job, or `retain_on_cancel`).
    pub(crate) async fn on_job_end(&mut self, ctx: &Context, keep: bool) {
        self.abort(ctx, "the job ended".into(), false).await;
        let job_id = &self.job_id.clone();
        let keep = keep || self.policy.as_ref().is_some_and(|p| p.retain_on_cancel);
        if keep {
            return;
        }
        for (id, _) in std::mem::take(&mut self.retained) {
            if let Err(e) = ctx.store.discard_checkpoint(job_id, id).await {
                tracing::warn!(job_id = %job_id, checkpoint = id, error = %e, "cannot record a discarded checkpoint");
            }
        }
        delete_dir(self.job_dir.clone()).await;
    }
}

/// Deletes a directory and everything in it, on a blocking thread; a missing one is fine.
async fn delete_dir(dir: PathBuf) {
    let shown = dir.display().to_string();
    let result = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(dir = %shown, error = %e, "cannot delete checkpoint files"),
        Err(e) => tracing::warn!(dir = %shown, error = %e, "checkpoint deletion did not run"),
    }
}

/// The source tasks' TaskManagers and all TaskManagers of a placement, as RPC addresses.
pub(crate) fn task_manager_addresses(
    tasks: &BTreeMap<TaskKey, super::TaskEntry>,
    source_chains: &BTreeSet<u32>,
    rpc_address: impl Fn(&crate::cluster::TaskManagerId) -> Option<String>,
) -> (Vec<String>, Vec<String>) {
    let mut sources = BTreeSet::new();
    let mut all = BTreeSet::new();
    for (key, entry) in tasks {
        if let Some(address) = rpc_address(&entry.task_manager) {
            if source_chains.contains(&key.chain.0) {
                sources.insert(address.clone());
            }
            all.insert(address);
        }
    }
    (sources.into_iter().collect(), all.into_iter().collect())
}
