//! The commit of a checkpoint whose every task acknowledged:
//! 1. refuse it if it reuses a shared file that is no longer kept;
//! 2. a savepoint moves to its own directory and gets its own copy of the shared files it references;
//! 3. `_metadata` goes in, last of the files;
//! 4. the store's row becomes COMPLETED: the commit point. The write is retried with a bounded back-off
//!    ([`COMPLETION_RECORD_ATTEMPTS`]) and is idempotent (a retry whose earlier try landed answers
//!    "completed"). A row the store refuses (it is not in progress) aborts the checkpoint and deletes its
//!    files; a write still failing after the retries leaves the outcome *unknown*, since the last try may
//!    have landed: the checkpoint is counted as failed but its files and shared files are kept (out of the
//!    sweep too), because the store may say it is COMPLETED and a later JobManager may restore from it.
//!    At the next completion the store records, each checkpoint in doubt is settled by reading its row;
//! 5. the TaskManagers are told, so sinks commit (awaited only before a stop-with-savepoint);
//! 6. retention: the checkpoint is retained and the oldest beyond the policy's count, with the shared files
//!    no retained checkpoint references any more, are handed to the janitor.
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use sluice_common::checkpoint_layout::SHARED_DIR;
use sluice_common::lifecycle::CheckpointStatus;
use sluice_common::proto::{AcknowledgeCheckpointRequest, NotifyCheckpointCompleteRequest};
use sluice_common::storage::Storage;

use super::coordinator::{instant_of, Coordinator, Pending, UNRECORDED_CHECKPOINTS_MAX};
use super::metadata::{
    write_metadata, CheckpointMetadata, FinishedTask, MetadataFile, MetadataVertex, METADATA_FORMAT,
};
use super::retention::Cleanup;
use super::{Kind, Verdict};
use crate::cluster::now_ms;
use crate::deployment::Deployment;
use crate::store::{CompletedCheckpoint, StoreError};

/// Tries of the store write that completes a checkpoint before its outcome counts as unknown. The tries
/// and their back-off span about 3 s (plus each query's own bound, `STORE_ACQUIRE_TIMEOUT`): a database
/// blip is ridden out, a longer outage costs one checkpoint, not the job's actor.
pub(crate) const COMPLETION_RECORD_ATTEMPTS: u32 = 5;
/// The back-off before the second try; it doubles up to [`COMPLETION_RECORD_BACKOFF_MAX`].
const COMPLETION_RECORD_BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// The longest back-off between two tries.
const COMPLETION_RECORD_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the store made of a checkpoint's completion.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CompletionRecord {
    /// The row is COMPLETED (by this try or an earlier one).
    Completed,
    /// The row is not in progress (failed, or gone): the checkpoint is not completed.
    Refused,
    /// Every try failed; the last error. The row may or may not be COMPLETED.
    Unknown(String),
}

/// Writes a completion with `write` (the store's idempotent `complete_checkpoint`), retrying errors with a
/// bounded, doubling back-off.
pub(crate) async fn record_completion<F, Fut>(checkpoint: u64, mut write: F) -> CompletionRecord
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, StoreError>>,
{
    let mut backoff = COMPLETION_RECORD_BACKOFF_FIRST;
    let mut last = String::new();
    for attempt in 1..=COMPLETION_RECORD_ATTEMPTS {
        match write().await {
            Ok(true) => return CompletionRecord::Completed,
            Ok(false) => return CompletionRecord::Refused,
            Err(e) => {
                tracing::warn!(checkpoint, attempt, error = %e, "cannot record a checkpoint as completed; retrying");
                last = e.to_string();
            }
        }
        if attempt < COMPLETION_RECORD_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(COMPLETION_RECORD_BACKOFF_MAX);
        }
    }
    CompletionRecord::Unknown(last)
}

impl Coordinator {
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
        let finished = pending
            .finished
            .iter()
            .filter_map(|key| {
                let chain = job.chains.iter().find(|c| c.index == key.chain.0)?;
                Some(FinishedTask { chain: key.chain.0, subtask: key.subtask.0, vertex_ids: chain.vertex_ids.clone() })
            })
            .collect();
        let mut metadata = CheckpointMetadata {
            format: METADATA_FORMAT,
            job_id: self.job_id.0.clone(),
            checkpoint_id: pending.id,
            kind: pending.kind.kind().as_str().to_string(),
            max_parallelism: job.max_parallelism(),
            vertices,
            files,
            shared_dir: None,
            finished,
        };
        metadata.format = metadata.format_needed();
        metadata
    }

    /// Commits `pending` (steps 1-6 above).
    pub(super) async fn complete(&mut self, deployment: Deployment, pending: Pending) -> Verdict {
        let job_id = &self.job_id.clone();
        if let Some(file) = self.shared.missing(&pending.acks) {
            let reason =
                format!("checkpoint {} references the shared file {file}, which is no longer kept", pending.id);
            return self.abort_pending(pending, None, reason, true).await;
        }
        let mut metadata = self.metadata(&pending);
        let shared_files: Vec<String> = {
            let all: BTreeSet<&String> = pending.acks.iter().flat_map(|a| &a.shared_files).collect();
            all.into_iter().cloned().collect()
        };
        let tasks_json = serde_json::to_string(&metadata.files).unwrap_or_else(|_| "[]".into());
        // A savepoint moves to its own directory first; then the metadata goes in, last of the files.
        let final_dir = match &pending.kind {
            Kind::Checkpoint | Kind::Drain => pending.dir.clone(),
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
            return self.abort_pending(pending, moved.then_some(final_dir), reason, true).await;
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
        let store = &self.services.store;
        match record_completion(pending.id, || store.complete_checkpoint(job_id, pending.id, &done)).await {
            CompletionRecord::Completed => self.resolve_unrecorded().await,
            CompletionRecord::Refused => {
                let reason =
                    format!("cannot record checkpoint {} as completed: it is no longer in progress", pending.id);
                return self.abort_pending(pending, moved.then_some(final_dir), reason, true).await;
            }
            CompletionRecord::Unknown(error) => return self.abandon_unrecorded(pending, &final_dir, &error).await,
        }
        let duration_ms = end_ms.saturating_sub(pending.trigger_ms);
        tracing::info!(job_id = %job_id, checkpoint = pending.id, kind = %pending.kind.kind(), duration_ms,
            size = done.state_size_bytes, alignment_ms = done.alignment_ms, sync_ms = done.sync_ms,
            async_ms = done.async_ms, location = %done.location, "checkpoint completed");
        self.services.metrics.completed(&job_id.0, duration_ms as f64 / 1000.0, done.state_size_bytes);
        self.consecutive_failures = 0;
        self.schedule_next(Some(trigger));

        // Tell the tasks (sinks commit). Without holding up the actor, except before a stop or a move: the tasks
        // are cancelled next, and their sinks must have committed what the checkpoint covers.
        let request = NotifyCheckpointCompleteRequest {
            job_id: job_id.0.clone(),
            attempt: pending.attempt,
            checkpoint_id: pending.id,
        };
        let addresses = deployment.all_task_managers;
        let notified_job = job_id.clone();
        let client = self.services.client.clone();
        let notify = async move {
            let calls = addresses.iter().map(|address| client.notify_checkpoint_complete(address, request.clone()));
            for result in join_all(calls).await {
                if let Err(e) = result {
                    tracing::warn!(job_id = %notified_job, error = %e, "cannot notify a TaskManager of a completed checkpoint");
                }
            }
        };
        if pending.kind.stops_sources() {
            notify.await;
        } else {
            tokio::spawn(notify);
        }

        self.shared.completions += 1;
        let (pending_id, drain) = (pending.id, matches!(pending.kind, Kind::Drain));
        match pending.kind {
            Kind::Savepoint { stop, .. } => {
                self.shared.unreferenced(&shared_files);
                if stop {
                    return Verdict::Stop;
                }
            }
            Kind::Checkpoint | Kind::Drain => {
                self.shared.retain(&shared_files);
                self.retained.push_back((pending.id, pending.dir, shared_files));
                let keep = self.policy.as_ref().map_or(1, |p| p.retained) as usize;
                while self.retained.len() > keep {
                    let Some((id, dir, files)) = self.retained.pop_front() else { break };
                    self.shared.release(&files);
                    self.janitor.submit(Cleanup::Discard { id, dir }).await;
                }
            }
        }
        let garbage = self.shared.collect();
        if !garbage.is_empty() {
            self.janitor.submit(Cleanup::SharedFiles(garbage)).await;
        }
        self.sweep().await;
        if drain {
            return Verdict::Redeploy(format!(
                "checkpoint {pending_id} before moving off a leaving TaskManager completed"
            ));
        }
        Verdict::Continue
    }
}

impl Coordinator {
    /// A checkpoint whose completion may or may not be recorded (the store kept failing): counted as failed,
    /// its files and the shared files it uploaded kept (a leak at worst, never a COMPLETED checkpoint without
    /// its files). Marking its row FAILED changes nothing if the completion did land (only IN_PROGRESS rows
    /// are failed).
    async fn abandon_unrecorded(&mut self, pending: Pending, final_dir: &Storage, error: &str) -> Verdict {
        let job_id = &self.job_id.clone();
        self.schedule_next(Some(instant_of(pending.trigger_ms)));
        let reason = format!(
            "cannot record checkpoint {} as completed after {COMPLETION_RECORD_ATTEMPTS} tries ({error}); its files in {} are kept",
            pending.id,
            final_dir.location()
        );
        tracing::warn!(job_id = %job_id, checkpoint = pending.id, %reason, "checkpoint failed");
        let uploaded: Vec<String> = pending.acks.iter().flat_map(|a| a.uploaded_shared_files.clone()).collect();
        self.unrecorded.push_back((pending.id, final_dir.clone(), uploaded));
        if self.unrecorded.len() > UNRECORDED_CHECKPOINTS_MAX {
            if let Some((id, dir, _)) = self.unrecorded.pop_front() {
                tracing::warn!(job_id = %job_id, checkpoint = id, dir = %dir.location(),
                    "too many checkpoints in doubt; the oldest is no longer protected from the sweep");
            }
        }
        if let Err(e) = self.services.store.fail_checkpoint(job_id, pending.id, now_ms(), &reason).await {
            tracing::warn!(job_id = %job_id, checkpoint = pending.id, error = %e, "cannot record a failed checkpoint");
        }
        self.verdict_on_failure(&pending.kind, &reason, true)
    }

    /// Before a restore from the retained checkpoints: settles every checkpoint in doubt so that the store
    /// agrees with the choice. It was never announced (its sink output is not committed) and is not among
    /// the candidates; one the store has as COMPLETED is marked discarded first, so that a JobManager taking
    /// the job over later does not restore from it either (a restore from an older checkpoint deletes what
    /// its sinks pre-committed). Err (the store's error) leaves the rest in doubt: the caller waits and
    /// asks again.
    pub(crate) async fn settle_before_restore(&mut self) -> Result<(), String> {
        let job_id = &self.job_id.clone();
        while let Some((id, dir, uploaded)) = self.unrecorded.front().cloned() {
            let record = self.services.store.checkpoint(job_id, id).await.map_err(|e| e.to_string())?;
            let cleanup = match record {
                Some(record) if record.status == CheckpointStatus::Completed => {
                    self.services.store.discard_checkpoint(job_id, id).await.map_err(|e| e.to_string())?;
                    Cleanup::Discard { id, dir }
                }
                _ => {
                    let reason = "its completion could not be recorded";
                    self.services
                        .store
                        .fail_checkpoint(job_id, id, now_ms(), reason)
                        .await
                        .map_err(|e| e.to_string())?;
                    Cleanup::Delete(dir)
                }
            };
            tracing::info!(job_id = %job_id, checkpoint = id, "settled a checkpoint in doubt before a restore");
            self.unrecorded.pop_front();
            self.shared.unreferenced(&uploaded);
            self.janitor.submit(cleanup).await;
        }
        Ok(())
    }

    /// The store answers again (a completion was just recorded): settles the checkpoints in doubt. One the
    /// store has as COMPLETED is discarded like a checkpoint that fell out of retention (a newer one is
    /// retained now); one it has otherwise is failed (a no-op if it is failed already) and deleted. One the
    /// store cannot be asked about stays in doubt.
    async fn resolve_unrecorded(&mut self) {
        let job_id = &self.job_id.clone();
        let mut still = VecDeque::new();
        for (id, dir, uploaded) in std::mem::take(&mut self.unrecorded) {
            let cleanup = match self.services.store.checkpoint(job_id, id).await {
                Err(_) => {
                    still.push_back((id, dir, uploaded));
                    continue;
                }
                Ok(Some(record)) if record.status == CheckpointStatus::Completed => Cleanup::Discard { id, dir },
                Ok(_) => {
                    let reason = "its completion could not be recorded";
                    if let Err(e) = self.services.store.fail_checkpoint(job_id, id, now_ms(), reason).await {
                        tracing::warn!(job_id = %job_id, checkpoint = id, error = %e, "cannot record a failed checkpoint");
                        still.push_back((id, dir, uploaded));
                        continue;
                    }
                    Cleanup::Delete(dir)
                }
            };
            tracing::info!(job_id = %job_id, checkpoint = id, "settled a checkpoint whose completion was in doubt");
            self.shared.unreferenced(&uploaded);
            self.janitor.submit(cleanup).await;
        }
        self.unrecorded = still;
    }
}
