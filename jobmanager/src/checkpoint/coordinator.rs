//! The state of one job's checkpoints: what is in flight, what waits, what is retained, and how many
//! failed in a row. The job's actor calls in when something happens (a deadline, an acknowledgement, a
//! decline, a task ending, a user's request) and acts on the [`Verdict`].
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use sluice_common::checkpoint_layout::{checkpoint_dir_name, is_single_component};
use sluice_common::ids::{CheckpointId, JobId, TaskManagerId};
use sluice_common::job::checkpoint::{CheckpointPolicy, CHECKPOINT_TIMEOUT_MS_DEFAULT};
use sluice_common::job::ValidatedJob;
use sluice_common::proto::{AcknowledgeCheckpointRequest, TriggerCheckpointRequest};
use sluice_common::storage::Storage;
use tokio::time::Instant;

use super::restore::RetainedCheckpoint;
use super::retention::{delete_dir, Cleanup, Janitor, SharedRegistry};
use super::{CheckpointServices, Kind, Reply, Verdict};
use crate::cluster::now_ms;
use crate::deployment::{Deployment, TaskKey};
use crate::task_manager_client::TaskManagerCallError;

/// A checkpoint in flight.
pub(super) struct Pending {
    pub(super) id: u64,
    pub(super) kind: Kind,
    pub(super) attempt: u32,
    pub(super) trigger_ms: u64,
    pub(super) deadline: Instant,
    pub(super) dir: Storage,
    /// Tasks that have not acknowledged yet.
    pub(super) waiting: BTreeSet<TaskKey>,
    pub(super) acks: Vec<AcknowledgeCheckpointRequest>,
    /// Tasks that finished before they took part: the checkpoint records them as finished.
    pub(super) finished: Vec<TaskKey>,
}

/// One job's checkpoint coordinator.
pub(crate) struct Coordinator {
    pub(super) job_id: JobId,
    pub(super) job: Arc<ValidatedJob>,
    /// The periodic policy; None: checkpoints only when a user asks.
    pub(super) policy: Option<CheckpointPolicy>,
    /// The job's checkpoint location (`chk-N/` under it).
    pub job_dir: Storage,
    pub(super) services: CheckpointServices,
    pub(super) last_id: u64,
    pub(super) pending: Option<Pending>,
    /// Requests waiting for the pending checkpoint to end.
    queued: VecDeque<(Kind, Reply)>,
    /// When the next periodic checkpoint is due.
    next_trigger: Option<Instant>,
    pub(super) consecutive_failures: u32,
    /// Completed checkpoints whose files are kept, oldest first, with the shared files they reference.
    pub(super) retained: VecDeque<RetainedCheckpoint>,
    pub(super) shared: SharedRegistry,
    /// Checkpoints whose completion may or may not be recorded (the store kept failing), oldest first, with
    /// the shared files they uploaded: kept out of the sweep until the store answers (`completion.rs`), at
    /// most [`UNRECORDED_CHECKPOINTS_MAX`].
    pub(super) unrecorded: VecDeque<(u64, Storage, Vec<String>)>,
    /// Deletes what is no longer kept, off the actor.
    pub(super) janitor: Janitor,
}

/// The most checkpoints kept in doubt at once (see [`Coordinator::unrecorded`]). Each is one checkpoint
/// interval of a store outage that `tolerable_failures` did not end; beyond it, the oldest is no longer
/// protected from the sweep (a warning says so).
pub(super) const UNRECORDED_CHECKPOINTS_MAX: usize = 64;

impl Coordinator {
    pub(crate) fn new(
        job_id: JobId,
        job: Arc<ValidatedJob>,
        policy: Option<CheckpointPolicy>,
        job_dir: Storage,
        last_id: u64,
        services: CheckpointServices,
    ) -> Self {
        let next_trigger = policy.as_ref().map(|p| Instant::now() + p.interval);
        let janitor = Janitor::start(job_id.clone(), job_dir.clone(), services.store.clone());
        Self {
            job_id,
            job,
            policy,
            job_dir,
            services,
            last_id,
            pending: None,
            queued: VecDeque::new(),
            next_trigger,
            consecutive_failures: 0,
            retained: VecDeque::new(),
            shared: SharedRegistry::default(),
            unrecorded: VecDeque::new(),
            janitor,
        }
    }

    /// The next moment the coordinator has something to do: a periodic trigger, or a pending timeout.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.pending {
            Some(pending) => Some(pending.deadline),
            None => self.next_trigger,
        }
    }

    /// The retained completed checkpoints a restart may start from, newest first: (id, location).
    pub(crate) fn restore_candidates(&self) -> Vec<(u64, String)> {
        self.retained.iter().rev().map(|(id, dir, _)| (*id, dir.location())).collect()
    }

    /// Takes over the completed checkpoints an earlier JobManager retained (oldest first): restarts may
    /// start from them, and retention deletes them, and the shared files only they reference, in turn.
    pub(crate) fn adopt(&mut self, retained: Vec<RetainedCheckpoint>) {
        for (id, dir, files) in retained {
            self.shared.retain(&files);
            self.retained.push_back((id, dir, files));
        }
    }

    /// A new attempt starts: failures of the old one's checkpoints no longer count against the tolerance.
    pub(crate) fn on_restart(&mut self) {
        self.consecutive_failures = 0;
    }

    /// The newest completed checkpoint whose files are kept.
    pub(crate) fn newest_retained_id(&self) -> Option<u64> {
        self.retained.back().map(|(id, _, _)| *id)
    }

    /// Whether the job takes periodic checkpoints.
    pub(crate) fn is_periodic(&self) -> bool {
        self.policy.is_some()
    }

    /// Whether a drain checkpoint is in flight or waits to start.
    pub(crate) fn drain_in_progress(&self) -> bool {
        let drain = |kind: &Kind| matches!(kind, Kind::Drain);
        self.pending.as_ref().is_some_and(|p| drain(&p.kind)) || self.queued.iter().any(|(kind, _)| drain(kind))
    }

    /// Whether requests wait that can start now.
    pub(crate) fn has_startable_requests(&self) -> bool {
        self.pending.is_none() && !self.queued.is_empty()
    }

    fn timeout(&self) -> Duration {
        self.policy.as_ref().map_or(Duration::from_millis(CHECKPOINT_TIMEOUT_MS_DEFAULT), |p| p.timeout)
    }

    pub(super) fn schedule_next(&mut self, trigger: Option<Instant>) {
        self.next_trigger = self.policy.as_ref().map(|p| {
            let earliest = Instant::now() + p.min_pause;
            trigger.map_or(earliest, |t| (t + p.interval).max(earliest))
        });
    }

    /// The deadline passed: times out the pending checkpoint, or triggers the periodic one (when every
    /// task runs or finished, and a source still runs; otherwise it is skipped and retried an interval later).
    pub(crate) async fn on_deadline(&mut self, deployment: Option<Deployment>) -> Verdict {
        let now = Instant::now();
        if let Some(pending) = &self.pending {
            if pending.deadline <= now {
                let reason = format!(
                    "{} {} expired after {} ms before every task acknowledged ({} missing)",
                    pending.kind.kind().as_str().to_lowercase(),
                    pending.id,
                    self.timeout().as_millis(),
                    pending.waiting.len()
                );
                return self.abort(reason, true).await;
            }
            return Verdict::Continue;
        }
        if self.next_trigger.is_none_or(|t| t > now) {
            return Verdict::Continue;
        }
        let Some(deployment) = deployment.filter(Deployment::has_running_source) else {
            tracing::debug!(job_id = %self.job_id, "skipping a periodic checkpoint: a task is neither running nor finished, or no source runs");
            self.schedule_next(Some(now));
            return Verdict::Continue;
        };
        self.trigger(deployment, Kind::Checkpoint).await.err().map_or(Verdict::Continue, |(verdict, _)| verdict)
    }

    /// A user's request: starts at once when nothing is in flight, else waits for the pending one to end. A
    /// drain does not wait for a periodic checkpoint: that one is aborted (not counted as a failure), since the
    /// TaskManager that leaves gives the drain a bounded time.
    pub(crate) async fn request(&mut self, deployment: Option<Deployment>, kind: Kind, reply: Reply) -> Verdict {
        if matches!(kind, Kind::Drain) && self.pending.as_ref().is_some_and(|p| matches!(p.kind, Kind::Checkpoint)) {
            self.abort("aborted for a drain checkpoint (a TaskManager is leaving)".into(), false).await;
        }
        if self.pending.is_some() {
            self.queued.push_back((kind, reply));
            return Verdict::Continue;
        }
        let Some(deployment) = deployment else {
            // The requester may have given up waiting; nothing else to do then.
            let _ = reply.send(Err("not every task of the job is running or finished".into()));
            return Verdict::Continue;
        };
        if !deployment.has_running_source() {
            let _ = reply.send(Err("no source of the job runs any more: the job is ending".into()));
            return Verdict::Continue;
        }
        match self.trigger(deployment, kind).await {
            Ok(id) => {
                let _ = reply.send(Ok(id));
                Verdict::Continue
            }
            Err((verdict, reason)) => {
                let _ = reply.send(Err(reason));
                verdict
            }
        }
    }

    /// Starts the oldest queued request, once nothing is in flight.
    pub(crate) async fn start_queued(&mut self, deployment: Option<Deployment>) -> Verdict {
        if self.pending.is_some() {
            return Verdict::Continue;
        }
        let Some((kind, reply)) = self.queued.pop_front() else { return Verdict::Continue };
        self.request(deployment, kind, reply).await
    }

    /// Starts a checkpoint now. Its id, or why none started (and whether that failed the job).
    async fn trigger(&mut self, deployment: Deployment, kind: Kind) -> Result<u64, (Verdict, String)> {
        let id = self.last_id + 1;
        self.last_id = id;
        let trigger_ms = now_ms();
        let dir = self.job_dir.child(&checkpoint_dir_name(CheckpointId(id)));
        let location = match &kind {
            Kind::Checkpoint | Kind::Drain => dir.location(),
            Kind::Savepoint { dir, .. } => dir.location(),
        };
        let job_id = &self.job_id.clone();
        let recorded =
            self.services.store.insert_checkpoint(job_id, id, deployment.attempt, kind.kind(), trigger_ms, &location);
        if let Err(e) = recorded.await {
            let reason = format!("cannot record checkpoint {id}: {e}");
            tracing::warn!(job_id = %job_id, %reason, "checkpoint not started");
            self.schedule_next(Some(Instant::now()));
            // A drain that cannot start is no checkpoint failure: the job moves anyway (`move_off_leaving`).
            let verdict = if matches!(kind, Kind::Drain) { Verdict::Continue } else { self.count_failure(&reason) };
            return Err((verdict, reason));
        }
        tracing::info!(job_id = %job_id, checkpoint = id, kind = %kind.kind(), "triggering");
        let stop_sources = kind.stops_sources();
        self.pending = Some(Pending {
            id,
            kind,
            attempt: deployment.attempt,
            trigger_ms,
            deadline: Instant::now() + self.timeout(),
            dir,
            waiting: deployment.tasks.iter().copied().collect(),
            acks: Vec::new(),
            // A task that took part in a checkpoint at or above this one cannot have; it is waited for (and the
            // checkpoint times out) rather than believed.
            finished: deployment.finished.iter().filter(|(_, last)| *last < id).map(|(key, _)| *key).collect(),
        });
        if let Some(pending) = self.pending.as_mut() {
            let took_part = deployment.finished.iter().filter(|(_, last)| *last >= id).map(|(key, _)| *key);
            pending.waiting.extend(took_part);
        }
        let request = TriggerCheckpointRequest {
            job_id: job_id.0.clone(),
            attempt: deployment.attempt,
            checkpoint_id: id,
            timestamp_ms: trigger_ms,
            stop_sources,
        };
        let (client, request) = (&self.services.client, &request);
        let calls = deployment.source_task_managers.iter().map(|(task_manager, address)| async move {
            (task_manager, client.trigger_checkpoint(address, request.clone()).await)
        });
        let errors: Vec<(&TaskManagerId, TaskManagerCallError)> =
            join_all(calls).await.into_iter().filter_map(|(tm, result)| result.err().map(|e| (tm, e))).collect();
        if let Some((task_manager, gone)) = errors.iter().find(|(_, e)| e.is_unreachable()) {
            // No process behind a source TaskManager's address: its tasks are gone, so the job fails over now
            // rather than after the tolerated checkpoint failures (a job whose tasks all ran there would
            // otherwise hear of the loss only through them). The restart marks that TaskManager lost.
            let reason = format!("cannot trigger checkpoint {id}: TaskManager {task_manager} is unreachable: {gone}");
            self.abort(reason.clone(), false).await;
            return Err((Verdict::FailJob(reason.clone()), reason));
        }
        if let Some((task_manager, error)) = errors.first() {
            let reason = format!("cannot trigger checkpoint {id} on TaskManager {task_manager}: {error}");
            let verdict = self.abort(reason.clone(), true).await;
            return Err((verdict, reason));
        }
        Ok(id)
    }

    /// A task acknowledged. When it was the last one, the checkpoint completes.
    pub(crate) async fn on_ack(&mut self, deployment: Deployment, ack: AcknowledgeCheckpointRequest) -> Verdict {
        let Some(task) = ack.task.as_ref() else { return Verdict::Continue };
        let key = TaskKey::of(task);
        let Some(pending) = self.pending.as_mut() else { return Verdict::Continue };
        if pending.id != ack.checkpoint_id || pending.attempt != task.attempt || !pending.waiting.remove(&key) {
            return Verdict::Continue; // An aborted checkpoint, or a repeated acknowledgement.
        }
        if let Some(name) = unsafe_file_name(&ack) {
            // Never kept: its names would reach `join` when the checkpoint completes or its files are deleted.
            let reason = format!(
                "checkpoint {} refused: task {}-{} acknowledged with the file name {name:?}, which is not a single \
                 path component",
                ack.checkpoint_id, key.chain.0, key.subtask.0
            );
            return self.abort(reason, true).await;
        }
        pending.acks.push(ack);
        if !pending.waiting.is_empty() {
            return Verdict::Continue;
        }
        let Some(pending) = self.pending.take() else { return Verdict::Continue };
        self.complete(deployment, pending).await
    }

    /// A task declined the pending checkpoint.
    pub(crate) async fn on_decline(&mut self, checkpoint_id: u64, reason: String) -> Verdict {
        if self.pending.as_ref().is_none_or(|p| p.id != checkpoint_id) {
            return Verdict::Continue;
        }
        self.abort(format!("checkpoint {checkpoint_id} declined: {reason}"), true).await
    }

    /// A task ended while the pending checkpoint waits for it. `finished_after`: it FINISHED, and this is the
    /// newest checkpoint it took part in.
    ///
    /// A task that finished without taking part counts as finished (Flink's FLIP-147): everything it sent
    /// reached the tasks below it before they took their part, as a channel that ended counts as aligned. One
    /// that took part still acknowledges (its report and its acknowledgement travel apart). Any other end
    /// aborts the checkpoint (not the checkpoint's fault, so it does not count towards the tolerable failures);
    /// the verdict matters for a checkpoint whose sources had stopped (a redeployment).
    pub(crate) async fn on_task_ended(
        &mut self,
        task: TaskKey,
        finished_after: Option<u64>,
        deployment: Option<Deployment>,
    ) -> Verdict {
        let Some(pending) = self.pending.as_mut().filter(|p| p.waiting.contains(&task)) else {
            return Verdict::Continue;
        };
        let id = pending.id;
        match (finished_after, deployment) {
            (Some(last), _) if last >= id => Verdict::Continue,
            (Some(_), Some(deployment)) => {
                pending.waiting.remove(&task);
                pending.finished.push(task);
                if !pending.waiting.is_empty() {
                    return Verdict::Continue;
                }
                let Some(pending) = self.pending.take() else { return Verdict::Continue };
                self.complete(deployment, pending).await
            }
            _ => {
                let reason = format!("checkpoint {id} aborted: a task ended before it took its part");
                self.abort(reason, false).await
            }
        }
    }

    /// Aborts the pending checkpoint (if any): FAILED in the store, its files deleted.
    pub(crate) async fn abort(&mut self, reason: String, counts: bool) -> Verdict {
        let Some(pending) = self.pending.take() else { return Verdict::Continue };
        self.abort_pending(pending, None, reason, counts).await
    }

    pub(super) async fn abort_pending(
        &mut self,
        pending: Pending,
        moved_to: Option<Storage>,
        reason: String,
        counts: bool,
    ) -> Verdict {
        let trigger = instant_of(pending.trigger_ms);
        self.schedule_next(Some(trigger));
        let uploaded: Vec<String> = pending.acks.iter().flat_map(|a| a.uploaded_shared_files.clone()).collect();
        self.shared.unreferenced(&uploaded);
        self.janitor.submit(Cleanup::Delete(pending.dir.clone())).await;
        if let Some(moved) = moved_to {
            self.janitor.submit(Cleanup::Delete(moved)).await;
        }
        self.sweep().await;
        let job_id = &self.job_id.clone();
        tracing::warn!(job_id = %job_id, checkpoint = pending.id, %reason, "checkpoint failed");
        if let Err(e) = self.services.store.fail_checkpoint(job_id, pending.id, now_ms(), &reason).await {
            tracing::warn!(job_id = %job_id, checkpoint = pending.id, error = %e, "cannot record a failed checkpoint");
        }
        self.verdict_on_failure(&pending.kind, &reason, counts)
    }

    /// What a failed checkpoint of `kind` means for the job. One whose sources stopped at its barrier (a drain,
    /// a stop-with-savepoint) leaves a job that emits nothing more: it is redeployed from the latest checkpoint.
    /// A drain's failure does not count against the tolerance (it is a move, whatever becomes of its
    /// checkpoint); a stop-with-savepoint's does, and beyond the tolerance the job fails over instead.
    pub(super) fn verdict_on_failure(&mut self, kind: &Kind, reason: &str, counts: bool) -> Verdict {
        let counts = counts && !matches!(kind, Kind::Drain);
        let verdict = if counts { self.count_failure(reason) } else { Verdict::Continue };
        if kind.stops_sources() && verdict == Verdict::Continue {
            return Verdict::Redeploy(format!("{reason}; the sources had stopped at its barrier"));
        }
        verdict
    }

    pub(super) fn count_failure(&mut self, reason: &str) -> Verdict {
        self.services.metrics.failed(&self.job_id.0);
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

    /// Answers every waiting request with `why` (the job is leaving RUNNING).
    pub(crate) fn refuse_queued(&mut self, why: &str) {
        for (_, reply) in self.queued.drain(..) {
            let _ = reply.send(Err(why.to_string()));
        }
    }

    /// Queues the deletion of every `chk-N` directory of the job that is neither retained nor in flight.
    pub(super) async fn sweep(&self) {
        let mut keep: BTreeSet<u64> = self.retained.iter().map(|(id, _, _)| *id).collect();
        keep.extend(self.pending.as_ref().map(|p| p.id));
        keep.extend(self.unrecorded.iter().map(|(id, _, _)| *id));
        self.janitor.submit(Cleanup::Sweep { keep, newest: self.last_id }).await;
    }

    /// The job ended: aborts what is in flight and deletes the job's checkpoints unless they are kept
    /// (a failed job, or `retain_on_cancel`). Savepoints are never deleted. Returns once every deletion is
    /// done.
    pub(crate) async fn on_job_end(&mut self, keep: bool) {
        self.refuse_queued("the job ended");
        self.abort("the job ended".into(), false).await;
        let job_id = &self.job_id.clone();
        let keep = keep || self.policy.as_ref().is_some_and(|p| p.retain_on_cancel);
        if keep {
            self.sweep().await;
            self.janitor.finish().await;
            return;
        }
        self.janitor.finish().await;
        for (id, _, _) in std::mem::take(&mut self.retained) {
            if let Err(e) = self.services.store.discard_checkpoint(job_id, id).await {
                tracing::warn!(job_id = %job_id, checkpoint = id, error = %e, "cannot record a discarded checkpoint");
            }
        }
        delete_dir(&self.job_dir).await;
    }
}

/// The first file name in `ack` that is not a single path component (`../x`, `a/b`), if any: names from the
/// wire are joined to the checkpoint's directories, to write `_metadata`, to copy and to delete.
fn unsafe_file_name(ack: &AcknowledgeCheckpointRequest) -> Option<&str> {
    let state_file = (!ack.state_file.is_empty()).then_some(&ack.state_file);
    state_file
        .into_iter()
        .chain(&ack.shared_files)
        .chain(&ack.uploaded_shared_files)
        .find(|name| !is_single_component(name))
        .map(String::as_str)
}

/// The runtime instant of a wall-clock time in the past (now, if that is before the runtime's epoch).
pub(super) fn instant_of(wall_ms: u64) -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_millis(now_ms().saturating_sub(wall_ms))).unwrap_or(now)
}
