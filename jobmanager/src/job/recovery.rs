//! What happens at start-up to jobs a previous JobManager left unfinished: they run again.
//!
//! A job found in a non-terminal status is taken over: its graph comes from the store, its state from
//! the newest completed checkpoint whose files are all there (older retained ones are the fallback, and
//! the log says so), and its next attempt follows the last one recorded, so TaskManagers that still know
//! the old attempt refuse nothing. The TaskManagers cancel the old attempt's tasks themselves when they
//! register with the new JobManager. Nobody resubmits anything.
//!
//! A job that cannot be taken over (a status text that names no state, a stored graph that no longer
//! validates) is closed as FAILED with the reason, written to the store directly: no actor owns it.
use std::sync::Arc;

use sluice_common::ids::JobId;
use sluice_common::job::validate;
use sluice_common::proto::{JobGraph, RestoreSpec};

use super::actor::JobActor;
use super::JobShared;
use crate::checkpoint::{plan_restore, retained_checkpoint, RetainedCheckpoint};
use crate::cluster::now_ms;
use crate::store::{CheckpointRecord, CHECKPOINTS_LISTED_MAX};
use crate::store::{StatusUpdate, Store, StoreError};
use crate::Context;
use sluice_common::lifecycle::JobStatus;

/// The cause recorded for jobs that were running when the JobManager stopped.
pub const JOBMANAGER_RESTARTED: &str = "JobManager restarted";

/// Takes over every unfinished job of an earlier JobManager. Returns the jobs resumed and the jobs closed
/// (with their cause).
pub(crate) async fn resume_unfinished_jobs(
    ctx: &Arc<Context>,
) -> Result<(Vec<JobId>, Vec<(JobId, String)>), StoreError> {
    let mut resumed = Vec::new();
    let mut closed = Vec::new();
    for (job_id, status_text) in ctx.store.unfinished_jobs().await? {
        let outcome = match status_text.parse::<JobStatus>() {
            Ok(_) => resume(ctx, &job_id).await?,
            Err(unknown) => Err(format!("{unknown}; the job cannot be resumed")),
        };
        match outcome {
            Ok(()) => resumed.push(job_id),
            Err(cause) => {
                close(&ctx.store, &job_id, &cause).await?;
                tracing::warn!(job_id = %job_id, from = %status_text, to = %JobStatus::Failed, %cause, "closed a job of an earlier JobManager");
                closed.push((job_id, cause));
            }
        }
    }
    Ok((resumed, closed))
}

/// Starts an actor for the job; Err(cause) when it cannot run again.
async fn resume(ctx: &Arc<Context>, job_id: &JobId) -> Result<Result<(), String>, StoreError> {
    let Some(record) = ctx.store.job(job_id).await? else { return Ok(Err("the job's record is gone".into())) };
    let graph: JobGraph = match serde_json::from_str(&record.graph_json) {
        Ok(graph) => graph,
        Err(e) => return Ok(Err(format!("{JOBMANAGER_RESTARTED}; the stored job graph is corrupt: {e}"))),
    };
    let job = match validate(graph) {
        Ok(job) => job,
        Err(e) => return Ok(Err(format!("{JOBMANAGER_RESTARTED}; the stored job graph no longer validates: {e}"))),
    };
    let completed: Vec<CheckpointRecord> = ctx
        .store
        .checkpoints(job_id, CHECKPOINTS_LISTED_MAX)
        .await?
        .into_iter()
        .filter(CheckpointRecord::is_restorable_checkpoint)
        .collect();
    // Newest first: the first one whose files are all there is the state to go on from.
    let mut restore: Option<RestoreSpec> = None;
    for checkpoint in &completed {
        match plan_restore(&checkpoint.location, &job).await {
            Ok(spec) => {
                restore = Some(spec);
                break;
            }
            Err(e) => tracing::warn!(job_id = %job_id, checkpoint = checkpoint.id, error = %e,
                "cannot resume from this checkpoint; trying the previous retained one"),
        }
    }
    if restore.is_none() && !completed.is_empty() {
        return Ok(Err(format!("{JOBMANAGER_RESTARTED}; none of its retained checkpoints can be restored")));
    }
    // Oldest first, as the coordinator keeps them; one that cannot be read is left to the sweep.
    let mut adopted: Vec<RetainedCheckpoint> = Vec::new();
    for checkpoint in completed.iter().rev() {
        match retained_checkpoint(checkpoint.id, &checkpoint.location).await {
            Ok(retained) => adopted.push(retained),
            Err(e) => {
                tracing::warn!(job_id = %job_id, checkpoint = checkpoint.id, error = %e, "cannot adopt a retained checkpoint")
            }
        }
    }
    let now = now_ms();
    let update = StatusUpdate { status: JobStatus::Created, at_ms: now, end_time_ms: None, failure_cause: None };
    ctx.store.update_status(job_id, &update).await?;
    let (shared, inbox) = JobShared::new(job_id.clone(), Arc::new(job), restore.clone());
    {
        let mut live = shared.live();
        live.restarts = record.attempt.0;
        live.failure_cause = Some(JOBMANAGER_RESTARTED.to_string());
    }
    ctx.jobs.insert(shared.clone());
    match &restore {
        Some(spec) => tracing::info!(job_id = %job_id, checkpoint = spec.checkpoint_id, from = %spec.dir,
            attempt = record.attempt.0, "resuming a job of an earlier JobManager"),
        None => tracing::warn!(job_id = %job_id, attempt = record.attempt.0,
            "resuming a job of an earlier JobManager from the start: it has no completed checkpoint"),
    }
    let actor = JobActor::resumed(ctx.clone(), shared, inbox, record.attempt, adopted);
    tokio::spawn(actor.run());
    Ok(Ok(()))
}

async fn close(store: &Store, job_id: &JobId, cause: &str) -> Result<(), StoreError> {
    let now = now_ms();
    let update = StatusUpdate {
        status: JobStatus::Failed,
        at_ms: now,
        end_time_ms: Some(now),
        failure_cause: Some(cause.to_string()),
    };
    store.update_status(job_id, &update).await
}
