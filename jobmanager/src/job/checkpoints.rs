//! The checkpoint coordinator of one job (ARCHITECTURE.md §7), driven by the job's actor while it runs.
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
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use sluice_common::ids::JobId;
use sluice_common::job::checkpoint::{CheckpointPolicy, CHECKPOINT_TIMEOUT_MS_DEFAULT};
use sluice_common::job::ValidatedJob;
use sluice_common::proto::vertex::Operator;
use sluice_common::proto::{
    AcknowledgeCheckpointRequest, NotifyCheckpointCompleteRequest, RestoreSpec, SnapshotFile, TriggerCheckpointRequest,
};
use sluice_common::storage::{Storage, StorageError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::task_manager_client::{notify_checkpoint_complete, trigger_checkpoint, TaskManagerCallError};
use super::TaskKey;
use crate::cluster::now_ms;
use crate::store::CompletedCheckpoint;
use crate::Context;

/// The file in a completed checkpoint's directory that describes it (what a restore reads first).
pub const METADATA_FILE: &str = "_metadata";
/// The folder under a job's checkpoint location with the files incremental snapshots share.
const SHARED_DIR: &str = "shared";
const METADATA_FORMAT: u32 = 1;

/// What is asked for.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Checkpoint,
    /// A savepoint going to `dir` (its final location); `stop`: the job stops once it completed.
    Savepoint {
        dir: Storage,
        stop: bool,
    },
}

impl Kind {
    fn as_str(&self) -> &'static str {
        match self {
            Kind::Checkpoint => "CHECKPOINT",
            Kind::Savepoint { .. } => "SAVEPOINT",
        }
    }
}

/// A request waiting for its checkpoint to start; answered with the checkpoint's id or why none started.
pub(crate) type Reply = oneshot::Sender<Result<u64, String>>;

/// A checkpoint in flight.
struct Pending {
    id: u64,
    kind: Kind,
    attempt: u32,
    trigger_ms: u64,
    deadline: Instant,
    dir: Storage,
    /// Tasks that have not acknowledged yet.
    waiting: BTreeSet<TaskKey>,
    acks: Vec<AcknowledgeCheckpointRequest>,
}

/// A completed checkpoint's `_metadata` (JSON): enough to restore from its directory alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    pub format: u32,
    pub job_id: String,
    pub checkpoint_id: u64,
    pub kind: String,
    pub max_parallelism: u32,
    /// Every vertex of the job, with its parallelism and whether it is a source.
    pub vertices: Vec<MetadataVertex>,
    /// One per task.
    pub files: Vec<MetadataFile>,
    /// Where the shared files the tasks' incremental snapshots reference are (a location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_dir: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataVertex {
    pub id: String,
    pub parallelism: u32,
    pub source: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataFile {
    pub file: String,
    pub chain: u32,
    pub subtask: u32,
    pub vertex_ids: Vec<String>,
    pub state_size_bytes: u64,
    pub alignment_ms: u64,
    pub sync_ms: u64,
    pub async_ms: u64,
    /// Files under the shared folder its snapshot references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
}

/// What the actor must do after the coordinator handled something.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing more.
    Continue,
    /// Too many consecutive checkpoints failed: fail the job with this cause.
    FailJob(String),
    /// A stop-with-savepoint completed: stop the job.
    Stop,
}

/// Where a trigger goes: the tasks and TaskManagers of the current attempt.
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
    job: Arc<ValidatedJob>,
    /// The periodic policy; None: checkpoints only when a user asks.
    policy: Option<CheckpointPolicy>,
    /// The job's checkpoint location (`chk-N/` under it).
    pub job_dir: Storage,
    last_id: u64,
    pending: Option<Pending>,
    /// Requests waiting for the pending checkpoint to end.
    queued: VecDeque<(Kind, Reply)>,
    /// When the next periodic checkpoint is due.
    next_trigger: Option<Instant>,
    consecutive_failures: u32,
    /// Completed checkpoints whose files are kept, oldest first, with the shared files they reference.
    retained: VecDeque<RetainedCheckpoint>,
    shared: SharedRegistry,
}

/// The files under a job's `shared/` (SST files of incremental RocksDB snapshots) and who uses them.
#[derive(Default)]
struct SharedRegistry {
    /// Retained checkpoints referencing each file.
    references: BTreeMap<String, u32>,
    /// Files no retained checkpoint references, with the completion at which they became so. They are deleted
    /// at a later completion unless referenced again: a task may reference a file in the checkpoint right
    /// after the completion that released it (it had not heard of that completion yet).
    released: BTreeMap<String, u64>,
    /// Checkpoints and savepoints completed.
    completions: u64,
}

impl SharedRegistry {
    /// The first file a checkpoint reuses that is no longer stored, if any.
    fn missing(&self, acks: &[AcknowledgeCheckpointRequest]) -> Option<String> {
        acks.iter().find_map(|ack| {
            ack.shared_files
                .iter()
                .filter(|f| !ack.uploaded_shared_files.contains(f))
                .find(|f| !self.references.contains_key(*f) && !self.released.contains_key(*f))
                .cloned()
        })
    }

    fn retain(&mut self, files: &[String]) {
        for file in files {
            *self.references.entry(file.clone()).or_default() += 1;
            self.released.remove(file);
        }
    }

    fn release(&mut self, files: &[String]) {
        for file in files {
            if let Some(count) = self.references.get_mut(file) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.references.remove(file);
                    self.released.insert(file.clone(), self.completions);
                }
            }
        }
    }

    /// Files that no retained checkpoint references (a savepoint's, an aborted checkpoint's uploads).
    fn unreferenced(&mut self, files: &[String]) {
        for file in files {
            if !self.references.contains_key(file) {
                self.released.entry(file.clone()).or_insert(self.completions);
            }
        }
    }

    /// Released files whose grace has passed; forgotten here, to be deleted.
    fn collect(&mut self) -> Vec<String> {
        let now = self.completions;
        let garbage: Vec<String> = self.released.iter().filter(|(_, &at)| at < now).map(|(f, _)| f.clone()).collect();
        for file in &garbage {
            self.released.remove(file);
        }
        garbage
    }
}

impl Coordinator {
    pub(crate) fn new(
        job_id: JobId,
        job: Arc<ValidatedJob>,
        policy: Option<CheckpointPolicy>,
        job_dir: Storage,
        last_id: u64,
    ) -> Self {
        let next_trigger = policy.as_ref().map(|p| Instant::now() + p.interval);
        Self {
            job_id,
            job,
            policy,
            job_dir,
            last_id,
            pending: None,
            queued: VecDeque::new(),
            next_trigger,
            consecutive_failures: 0,
            retained: VecDeque::new(),
            shared: SharedRegistry::default(),
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

    /// Whether the job takes periodic checkpoints.
    pub(crate) fn is_periodic(&self) -> bool {
        self.policy.is_some()
    }

    /// Whether requests wait that can start now.
    pub(crate) fn has_startable_requests(&self) -> bool {
        self.pending.is_none() && !self.queued.is_empty()
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
                    "{} {} expired after {} ms before every task acknowledged ({} missing)",
                    pending.kind.as_str().to_lowercase(),
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
            tracing::debug!(job_id = %self.job_id, "skipping a periodic checkpoint: not every task is running");
            self.schedule_next(Some(now));
            return Verdict::Continue;
        };
        self.trigger(ctx, deployment, Kind::Checkpoint).await.err().map_or(Verdict::Continue, |(verdict, _)| verdict)
    }

    /// A user's request: starts at once when nothing is in flight, else waits for the pending one to end.
    pub(crate) async fn request(
        &mut self,
        ctx: &Context,
        deployment: Option<Deployment>,
        kind: Kind,
        reply: Reply,
    ) -> Verdict {
        if self.pending.is_some() {
            self.queued.push_back((kind, reply));
            return Verdict::Continue;
        }
        let Some(deployment) = deployment else {
            // The requester may have given up waiting; nothing else to do then.
            let _ = reply.send(Err("not every task of the job is running".into()));
            return Verdict::Continue;
        };
        match self.trigger(ctx, deployment, kind).await {
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
    pub(crate) async fn start_queued(&mut self, ctx: &Context, deployment: Option<Deployment>) -> Verdict {
        if self.pending.is_some() {
            return Verdict::Continue;
        }
        let Some((kind, reply)) = self.queued.pop_front() else { return Verdict::Continue };
        self.request(ctx, deployment, kind, reply).await
    }

    /// Starts a checkpoint now. Its id, or why none started (and whether that failed the job).
    async fn trigger(&mut self, ctx: &Context, deployment: Deployment, kind: Kind) -> Result<u64, (Verdict, String)> {
        let id = self.last_id + 1;
        self.last_id = id;
        let trigger_ms = now_ms();
        let dir = self.job_dir.child(&format!("chk-{id}"));
        let location = match &kind {
            Kind::Checkpoint => dir.location(),
            Kind::Savepoint { dir, .. } => dir.location(),
        };
        let job_id = &self.job_id.clone();
        if let Err(e) =
            ctx.store.insert_checkpoint(job_id, id, deployment.attempt, kind.as_str(), trigger_ms, &location).await
        {
            let reason = format!("cannot record checkpoint {id}: {e}");
            tracing::warn!(job_id = %job_id, %reason, "checkpoint not started");
            self.schedule_next(Some(Instant::now()));
            return Err((self.count_failure(ctx, &reason), reason));
        }
        tracing::info!(job_id = %job_id, checkpoint = id, kind = kind.as_str(), "triggering");
        let stop_sources = matches!(kind, Kind::Savepoint { stop: true, .. });
        self.pending = Some(Pending {
            id,
            kind,
            attempt: deployment.attempt,
            trigger_ms,
            deadline: Instant::now() + self.timeout(),
            dir,
            waiting: deployment.tasks.iter().copied().collect(),
            acks: Vec::new(),
        });
        let request = TriggerCheckpointRequest {
            job_id: job_id.0.clone(),
            attempt: deployment.attempt,
            checkpoint_id: id,
            timestamp_ms: trigger_ms,
            stop_sources,
        };
        let results = join_all(
            deployment.source_task_managers.iter().map(|address| trigger_checkpoint(address, request.clone())),
        )
        .await;
        let errors: Vec<TaskManagerCallError> = results.into_iter().filter_map(Result::err).collect();
        if let Some(gone) = errors.iter().find(|e| matches!(e, TaskManagerCallError::Connect { .. })) {
            // No process behind a source TaskManager's address: its tasks are gone, so the job fails over now
            // rather than after the tolerated checkpoint failures (a job whose tasks all ran there would
            // otherwise hear of the loss only through them). The restart marks that TaskManager lost.
            let reason = format!("cannot trigger checkpoint {id}: {gone}");
            self.abort(ctx, reason.clone(), false).await;
            return Err((Verdict::FailJob(reason.clone()), reason));
        }
        if let Some(error) = errors.first() {
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

    /// The `_metadata` of a checkpoint whose every task acknowledged.
    fn metadata(&self, pending: &Pending) -> CheckpointMetadata {
        let job = &self.job;
        let fed: BTreeSet<&str> = job.graph.edges.iter().map(|e| e.to.as_str()).collect();
        let vertices = job
            .graph
            .vertices
            .iter()
            .map(|v| MetadataVertex {
                id: v.id.clone(),
                parallelism: v.parallelism,
                source: !fed.contains(v.id.as_str()),
            })
            .collect();
        let files = pending
            .acks
            .iter()
            .filter_map(|a| {
                let task = a.task.as_ref()?;
                let chain = job.chains.iter().find(|c| c.index == task.chain)?;
                Some(MetadataFile {
                    file: a.state_file.clone(),
                    chain: task.chain,
                    subtask: task.subtask,
                    vertex_ids: chain.vertex_ids.clone(),
                    state_size_bytes: a.state_size_bytes,
                    alignment_ms: a.alignment_ms,
                    sync_ms: a.sync_ms,
                    async_ms: a.async_ms,
                    shared: a.shared_files.clone(),
                })
            })
            .collect();
        CheckpointMetadata {
            format: METADATA_FORMAT,
            job_id: self.job_id.0.clone(),
            checkpoint_id: pending.id,
            kind: pending.kind.as_str().to_string(),
            max_parallelism: job.max_parallelism(),
            vertices,
            files,
            shared_dir: None,
        }
    }

    async fn complete(&mut self, ctx: &Context, deployment: Deployment, pending: Pending) -> Verdict {
        let job_id = &self.job_id.clone();
        if let Some(file) = self.shared.missing(&pending.acks) {
            let reason =
                format!("checkpoint {} references the shared file {file}, which is no longer kept", pending.id);
            return self.abort_pending(ctx, pending, None, reason, true).await;
        }
        let mut metadata = self.metadata(&pending);
        let shared_files: Vec<String> = {
            let all: BTreeSet<&String> = pending.acks.iter().flat_map(|a| &a.shared_files).collect();
            all.into_iter().cloned().collect()
        };
        let tasks_json = serde_json::to_string(&metadata.files).unwrap_or_else(|_| "[]".into());
        // A savepoint moves to its own directory first; then the metadata goes in, last of the files.
        let final_dir = match &pending.kind {
            Kind::Checkpoint => pending.dir.clone(),
            Kind::Savepoint { dir, .. } => dir.clone(),
        };
        let moved = matches!(pending.kind, Kind::Savepoint { .. });
        let job_shared = self.job_dir.child(SHARED_DIR);
        let written = async {
            if moved {
                pending.dir.move_to(&final_dir).await?;
                // A savepoint stands alone: the shared files it references are copied into it.
                let own = final_dir.child(SHARED_DIR);
                for file in &shared_files {
                    own.put(file, job_shared.get(file).await?).await?;
                }
                metadata.shared_dir = (!shared_files.is_empty()).then(|| own.location());
            } else {
                metadata.shared_dir = (!shared_files.is_empty()).then(|| job_shared.location());
            }
            write_metadata(&final_dir, &metadata).await
        }
        .await;
        if let Err(e) = written {
            let reason = format!("cannot write checkpoint {}'s metadata in {}: {e}", pending.id, final_dir.location());
            let verdict = self.abort_pending(ctx, pending, moved.then_some(final_dir), reason, true).await;
            return verdict;
        }

        let end_ms = now_ms();
        let max = |f: fn(&AcknowledgeCheckpointRequest) -> u64| pending.acks.iter().map(f).max().unwrap_or(0);
        let done = CompletedCheckpoint {
            end_ms,
            location: final_dir.location(),
            state_size_bytes: pending.acks.iter().map(|a| a.state_size_bytes).sum(),
            alignment_ms: max(|a| a.alignment_ms),
            sync_ms: max(|a| a.sync_ms),
            async_ms: max(|a| a.async_ms),
            tasks_json,
        };
        let trigger = instant_of(pending.trigger_ms);
        match ctx.store.complete_checkpoint(job_id, pending.id, &done).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                let reason = format!("cannot record checkpoint {} as completed", pending.id);
                return self.abort_pending(ctx, pending, moved.then_some(final_dir), reason, true).await;
            }
        }
        let duration_ms = end_ms.saturating_sub(pending.trigger_ms);
        tracing::info!(job_id = %job_id, checkpoint = pending.id, kind = pending.kind.as_str(), duration_ms,
            size = done.state_size_bytes, alignment_ms = done.alignment_ms, sync_ms = done.sync_ms,
            async_ms = done.async_ms, location = %done.location, "checkpoint completed");
        ctx.metrics.checkpoint_duration.with_label_values(&[job_id.0.as_str()]).observe(duration_ms as f64 / 1000.0);
        ctx.metrics
            .checkpoint_size
            .with_label_values(&[job_id.0.as_str()])
            .set(i64::try_from(done.state_size_bytes).unwrap_or(i64::MAX));
        ctx.metrics.checkpoints.with_label_values(&[job_id.0.as_str(), "completed"]).inc();
        self.consecutive_failures = 0;
        self.schedule_next(Some(trigger));

        // Tell the tasks (sinks commit). Without holding up the actor, except before a stop: the tasks are
        // cancelled next, and their sinks must have committed what the savepoint covers.
        let request = NotifyCheckpointCompleteRequest {
            job_id: job_id.0.clone(),
            attempt: pending.attempt,
            checkpoint_id: pending.id,
        };
        let addresses = deployment.all_task_managers;
        let notified_job = job_id.clone();
        let notify = async move {
            let calls = addresses.iter().map(|address| notify_checkpoint_complete(address, request.clone()));
            for result in join_all(calls).await {
                if let Err(e) = result {
                    tracing::warn!(job_id = %notified_job, error = %e, "cannot notify a TaskManager of a completed checkpoint");
                }
            }
        };
        if matches!(pending.kind, Kind::Savepoint { stop: true, .. }) {
            notify.await;
        } else {
            tokio::spawn(notify);
        }

        self.shared.completions += 1;
        match pending.kind {
            Kind::Savepoint { stop, .. } => {
                self.shared.unreferenced(&shared_files);
                if stop {
                    return Verdict::Stop;
                }
            }
            Kind::Checkpoint => {
                self.shared.retain(&shared_files);
                self.retained.push_back((pending.id, pending.dir, shared_files));
                let keep = self.policy.as_ref().map_or(1, |p| p.retained) as usize;
                while self.retained.len() > keep {
                    let Some((id, dir, files)) = self.retained.pop_front() else { break };
                    self.shared.release(&files);
                    delete_dir(&dir).await;
                    if let Err(e) = ctx.store.discard_checkpoint(job_id, id).await {
                        tracing::warn!(job_id = %job_id, checkpoint = id, error = %e, "cannot record a discarded checkpoint");
                    }
                }
            }
        }
        for file in self.shared.collect() {
            if let Err(e) = job_shared.delete(&file).await {
                tracing::warn!(job_id = %job_id, file, error = %e, "cannot delete a shared checkpoint file");
            }
        }
        self.sweep().await;
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
        self.abort_pending(ctx, pending, None, reason, counts).await
    }

    async fn abort_pending(
        &mut self,
        ctx: &Context,
        pending: Pending,
        moved_to: Option<Storage>,
        reason: String,
        counts: bool,
    ) -> Verdict {
        let trigger = instant_of(pending.trigger_ms);
        self.schedule_next(Some(trigger));
        let uploaded: Vec<String> = pending.acks.iter().flat_map(|a| a.uploaded_shared_files.clone()).collect();
        self.shared.unreferenced(&uploaded);
        delete_dir(&pending.dir).await;
        if let Some(moved) = moved_to {
            delete_dir(&moved).await;
        }
        self.sweep().await;
        let job_id = &self.job_id.clone();
        tracing::warn!(job_id = %job_id, checkpoint = pending.id, %reason, "checkpoint failed");
        if let Err(e) = ctx.store.fail_checkpoint(job_id, pending.id, now_ms(), &reason).await {
            tracing::warn!(job_id = %job_id, checkpoint = pending.id, error = %e, "cannot record a failed checkpoint");
        }
        if counts {
            self.count_failure(ctx, &reason)
        } else {
            Verdict::Continue
        }
    }

    fn count_failure(&mut self, ctx: &Context, reason: &str) -> Verdict {
        ctx.metrics.checkpoints.with_label_values(&[self.job_id.0.as_str(), "failed"]).inc();
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

    /// The job ended: aborts what is in flight and deletes the job's checkpoints unless they are kept
    /// (a failed job, or `retain_on_cancel`). Savepoints are never deleted.
    pub(crate) async fn on_job_end(&mut self, ctx: &Context, keep: bool) {
        self.refuse_queued("the job ended");
        self.abort(ctx, "the job ended".into(), false).await;
        let job_id = &self.job_id.clone();
        let keep = keep || self.policy.as_ref().is_some_and(|p| p.retain_on_cancel);
        if keep {
            self.sweep().await;
            return;
        }
        for (id, _, _) in std::mem::take(&mut self.retained) {
            if let Err(e) = ctx.store.discard_checkpoint(job_id, id).await {
                tracing::warn!(job_id = %job_id, checkpoint = id, error = %e, "cannot record a discarded checkpoint");
            }
        }
        delete_dir(&self.job_dir).await;
    }
}

impl Coordinator {
    /// Deletes every `chk-N` directory of the job that is neither retained nor in flight: what a task wrote
    /// for a checkpoint after it was aborted (its write was already under way) would be orphaned otherwise.
    async fn sweep(&self) {
        let mut keep: BTreeSet<u64> = self.retained.iter().map(|(id, _, _)| *id).collect();
        keep.extend(self.pending.as_ref().map(|p| p.id));
        let names = match self.job_dir.list_dirs().await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the job's checkpoints");
                return;
            }
        };
        for name in names {
            let id = name.strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok());
            if id.is_some_and(|id| !keep.contains(&id)) {
                let orphan = self.job_dir.child(&name);
                tracing::info!(dir = %orphan.location(), "deleting the files of a checkpoint that did not complete");
                delete_dir(&orphan).await;
            }
        }
    }
}

/// The runtime instant of a wall-clock time in the past (now, if that is before the runtime's epoch).
fn instant_of(wall_ms: u64) -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_millis(now_ms().saturating_sub(wall_ms))).unwrap_or(now)
}

/// Writes `_metadata` into `dir` atomically (a local file: temporary file, sync, rename).
async fn write_metadata(dir: &Storage, metadata: &CheckpointMetadata) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec_pretty(metadata).map_err(|e| StorageError(e.to_string()))?;
    dir.put(METADATA_FILE, bytes).await
}

/// Deletes a location and everything in it; a missing one is fine, a failure is logged.
async fn delete_dir(dir: &Storage) {
    if let Err(e) = dir.delete_all().await {
        tracing::warn!(dir = %dir.location(), error = %e, "cannot delete checkpoint files");
    }
}

/// Reads a checkpoint's or savepoint's `_metadata` (`path` is its directory or the file itself) and checks
/// that it can start `job`: same number of key groups, every vertex of the checkpoint still in the job,
/// sources at their old parallelism (except Kafka sources), every snapshot file present. The error says what is wrong and where.
pub async fn plan_restore(path: &str, job: &ValidatedJob) -> Result<RestoreSpec, String> {
    let (dir, metadata) = read_metadata(path).await?;
    let file = dir.describe(METADATA_FILE);
    let mut problems = Vec::new();
    let shared = match &metadata.shared_dir {
        Some(location) => Some(Storage::open(location).map_err(|e| format!("{file}: its shared folder: {e}"))?),
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
    for f in &metadata.files {
        let unsafe_name = f.file.contains('/') || f.file.contains("..") || f.file.is_empty();
        if unsafe_name || !dir.exists(&f.file).await.map_err(|e| format!("cannot restore: {e}"))? {
            problems.push(format!("snapshot file {} is missing", dir.describe(&f.file)));
        }
        for name in &f.shared {
            let present = match &shared {
                Some(shared) if !name.contains('/') && !name.contains("..") => {
                    shared.exists(name).await.map_err(|e| format!("cannot restore: {e}"))?
                }
                _ => false,
            };
            if !present {
                let shown = shared.as_ref().map_or_else(|| name.clone(), |s| s.describe(name));
                problems.push(format!("shared file {shown} is missing"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(format!("cannot restore from {}: {}", dir.location(), problems.join("; ")));
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
    })
}

/// Reads the `_metadata` of a checkpoint or savepoint (`path` is its directory or the file itself).
async fn read_metadata(path: &str) -> Result<(Storage, CheckpointMetadata), String> {
    let trimmed = path.trim().trim_end_matches('/');
    let location = trimmed.strip_suffix(METADATA_FILE).map_or(trimmed, |l| l.trim_end_matches('/'));
    let dir = Storage::open(if location.is_empty() { "/" } else { location }).map_err(|e| e.to_string())?;
    let file = dir.describe(METADATA_FILE);
    let bytes =
        dir.get(METADATA_FILE).await.map_err(|e| format!("{e} (is {path} a completed checkpoint or savepoint?)"))?;
    let metadata: CheckpointMetadata =
        serde_json::from_slice(&bytes).map_err(|e| format!("{file} is not checkpoint metadata: {e}"))?;
    if metadata.format != METADATA_FORMAT {
        return Err(format!("{file}: metadata format {}; this build reads {METADATA_FORMAT}", metadata.format));
    }
    Ok((dir, metadata))
}

/// A completed checkpoint an earlier JobManager retained: (id, directory, shared files it references).
pub(crate) type RetainedCheckpoint = (u64, Storage, Vec<String>);

/// Reads what a retained checkpoint at `location` references, for a JobManager that takes the job over.
pub(crate) async fn retained_checkpoint(id: u64, location: &str) -> Result<RetainedCheckpoint, String> {
    let (dir, metadata) = read_metadata(location).await?;
    let shared = metadata.files.into_iter().flat_map(|f| f.shared).collect();
    Ok((id, dir, shared))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn ack(shared: &[&str], uploaded: &[&str]) -> AcknowledgeCheckpointRequest {
        AcknowledgeCheckpointRequest {
            shared_files: files(shared),
            uploaded_shared_files: files(uploaded),
            ..Default::default()
        }
    }

    /// A shared file is deleted only when no retained checkpoint references it and one more completion has
    /// passed without it being referenced again; a checkpoint reusing a file that is gone is refused.
    #[test]
    fn shared_files_live_while_referenced_and_one_completion_longer() {
        let mut registry = SharedRegistry::default();
        // Checkpoint 1 uploads a and b; retained = 1.
        assert_eq!(registry.missing(&[ack(&["a", "b"], &["a", "b"])]), None);
        registry.completions += 1;
        registry.retain(&files(&["a", "b"]));
        assert!(registry.collect().is_empty());
        // Checkpoint 2 reuses b, uploads c; checkpoint 1 is released: a waits one completion.
        assert_eq!(registry.missing(&[ack(&["b", "c"], &["c"])]), None);
        registry.completions += 1;
        registry.retain(&files(&["b", "c"]));
        registry.release(&files(&["a", "b"]));
        assert!(registry.collect().is_empty(), "a was released just now");
        // A task that had not heard of checkpoint 2 still references a in checkpoint 3: allowed, and a lives on.
        assert_eq!(registry.missing(&[ack(&["a", "c"], &[])]), None);
        registry.completions += 1;
        registry.retain(&files(&["a", "c"]));
        registry.release(&files(&["b", "c"]));
        assert!(registry.collect().is_empty(), "a is referenced again, b was released just now");
        // Checkpoint 4 references only c: b goes now, a one completion later.
        registry.completions += 1;
        registry.retain(&files(&["c"]));
        registry.release(&files(&["a", "c"]));
        assert_eq!(registry.collect(), files(&["b"]));
        assert_eq!(registry.missing(&[ack(&["b"], &[])]), Some("b".to_string()), "b is gone");
        registry.completions += 1;
        assert_eq!(registry.collect(), files(&["a"]));
        // An aborted checkpoint's uploads go at the next completion.
        registry.unreferenced(&files(&["d"]));
        registry.completions += 1;
        assert_eq!(registry.collect(), files(&["d"]));
        assert_eq!(registry.references.keys().cloned().collect::<Vec<_>>(), files(&["c"]));
    }
}
