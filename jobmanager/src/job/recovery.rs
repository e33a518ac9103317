//! What a new leader does at the start of its term (see `crate::leader`): it fails the checkpoints the
//! previous leader left in progress, starts the heartbeat monitor and retention, and takes over every job the
//! previous leader (or an earlier process) left unfinished.
//!
//! A job left RUNNING whose attempt is recorded is **adopted** if its tasks still run: its actor waits for the
//! TaskManagers to report them as they register with this leader (`states::adopting`), and only if that fails
//! does it restart the job as described next.
//!
//! A job found in a non-terminal status is taken over: its graph comes from the store, its state from
//! the newest completed checkpoint whose files are all there (older retained ones are the fallback, and
//! the log says so; a checkpoint store that does not answer is waited for, never taken as a reason to fall
//! back, see [`super::restore_point`]), else the savepoint it was submitted from, and its next attempt
//! follows the last one recorded, so TaskManagers that still know the old attempt refuse nothing. The
//! TaskManagers cancel the old attempt's tasks themselves when they register with the new JobManager.
//! Nobody resubmits anything.
//!
//! A job that cannot be taken over (a status text that names no state, a stored graph that no longer
//! validates) is closed as FAILED with the reason, written to the store directly: no actor owns it.
use std::sync::Arc;

use sluice_common::ids::JobId;
use sluice_common::job::bounds::SLOT_WAIT_TIMEOUT_MS_MAX;
use sluice_common::job::validate;
use sluice_common::proto::{JobGraph, RestoreSpec};

use tokio::sync::oneshot;

use super::actor::JobActor;
use super::states::adopting::PendingAdoption;
use super::JobShared;
use crate::cluster::now_ms;
use crate::store::CHECKPOINTS_LISTED_MAX;
use crate::store::{StatusUpdate, Store, StoreError};
use crate::Context;
use sluice_common::lifecycle::JobStatus;

/// The cause recorded for jobs that were running when the JobManager stopped.
pub const JOBMANAGER_RESTARTED: &str = "JobManager restarted";

/// Starts a leader's term: fails the checkpoints left in progress, starts the term's background work, and
/// takes over every unfinished job. Returns one receiver per job being adopted, told when its actor has
/// adopted or redeployed it.
pub(crate) async fn start_term(ctx: Arc<Context>) -> anyhow::Result<Vec<oneshot::Receiver<()>>> {
    let failed = ctx.store.fail_in_progress_checkpoints(now_ms(), "the JobManager leading changed").await?;
    if failed > 0 {
        tracing::warn!(checkpoints = failed, "failed the checkpoints an earlier leader left in progress");
    }
    let stop = ctx.leadership.term_stop();
    let check_interval = ctx.settings.heartbeat_timeout / crate::HEARTBEAT_CHECKS_PER_TIMEOUT;
    ctx.leadership.spawn(crate::cluster::run_heartbeat_monitor(
        ctx.cluster.clone(),
        check_interval.max(crate::HEARTBEAT_CHECK_INTERVAL_MIN),
        ctx.metrics.task_managers_lost.clone(),
        stop.clone(),
    ));
    ctx.leadership.spawn(crate::store::run_metadata_retention(ctx.store.clone(), ctx.settings.retention, stop));
    let (resumed, closed, decisions) = resume_unfinished_jobs(&ctx).await?;
    if !resumed.is_empty() || !closed.is_empty() {
        tracing::warn!(
            resumed = resumed.len(),
            adopting = decisions.len(),
            closed = closed.len(),
            "took over the unfinished jobs of an earlier leader"
        );
    }
    Ok(decisions)
}

/// Jobs resumed, jobs closed (with their cause), and a receiver per job being adopted.
type TakeOver = (Vec<JobId>, Vec<(JobId, String)>, Vec<oneshot::Receiver<()>>);

/// Takes over every unfinished job of an earlier JobManager.
pub(crate) async fn resume_unfinished_jobs(ctx: &Arc<Context>) -> Result<TakeOver, StoreError> {
    let mut resumed = Vec::new();
    let mut closed = Vec::new();
    let mut decisions = Vec::new();
    for (job_id, status_text) in ctx.store.unfinished_jobs().await? {
        let outcome = match status_text.parse::<JobStatus>() {
            Ok(status) => resume(ctx, &job_id, status, &mut decisions).await?,
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
    Ok((resumed, closed, decisions))
}

/// Starts an actor for the job; Err(cause) when it cannot run again.
async fn resume(
    ctx: &Arc<Context>,
    job_id: &JobId,
    status: JobStatus,
    decisions: &mut Vec<oneshot::Receiver<()>>,
) -> Result<Result<(), String>, StoreError> {
    let Some(record) = ctx.store.job(job_id).await? else { return Ok(Err("the job's record is gone".into())) };
    let graph: JobGraph = match serde_json::from_str(&record.graph_json) {
        Ok(graph) => graph,
        Err(e) => return Ok(Err(format!("{JOBMANAGER_RESTARTED}; the stored job graph is corrupt: {e}"))),
    };
    // A job accepted before a bound was introduced keeps running under it, not FAILED by the upgrade: the
    // slot wait is clamped to its bound (the one bound added to a value earlier builds accepted as is).
    let mut graph = graph;
    if let Some(config) = graph.config.as_mut() {
        if let Some(wait) = config.slot_wait_timeout_ms.as_mut() {
            if *wait > SLOT_WAIT_TIMEOUT_MS_MAX {
                tracing::warn!(job_id = %job_id, from_ms = *wait, to_ms = SLOT_WAIT_TIMEOUT_MS_MAX,
                    "clamping the slot wait of a job submitted before its bound");
                *wait = SLOT_WAIT_TIMEOUT_MS_MAX;
            }
        }
    }
    let job = match validate(graph) {
        Ok(job) => job,
        Err(e) => return Ok(Err(format!("{JOBMANAGER_RESTARTED}; the stored job graph no longer validates: {e}"))),
    };
    let submitted_restore: Option<RestoreSpec> = match record.submitted_restore_json.as_deref() {
        None => None,
        Some(text) => match serde_json::from_str(text) {
            Ok(spec) => Some(spec),
            Err(e) => {
                return Ok(Err(format!("{JOBMANAGER_RESTARTED}; the stored savepoint it started from is corrupt: {e}")))
            }
        },
    };
    // Newest first. Reading them (and choosing the one to go on from) is the actor's first step, so that a
    // checkpoint store that is down is waited for there, with the reason in the job's status, and no other
    // job waits for it (see `restore_point`).
    let completed: Vec<(u64, String)> = ctx
        .store
        .restorable_checkpoints(job_id, CHECKPOINTS_LISTED_MAX)
        .await?
        .into_iter()
        .map(|checkpoint| (checkpoint.id, checkpoint.location))
        .collect();
    let recorded = match (status, record.attempt.0) {
        (JobStatus::Running, 1..) => match ctx.store.attempt(job_id, record.attempt).await {
            Ok(recorded) => recorded,
            // This job is restarted instead of adopted; the others are not held up by its row.
            Err(StoreError::Corrupt(why)) => {
                tracing::warn!(job_id = %job_id, %why, "cannot read the recorded attempt; restarting the job");
                None
            }
            Err(e) => return Err(e),
        },
        _ => None,
    };
    if let Some((execution_id, _)) = recorded {
        // Left RUNNING: adopt its tasks if they all still run (the status stays RUNNING meanwhile).
        let (shared, inbox) = JobShared::new(job_id.clone(), Arc::new(job), submitted_restore);
        {
            let mut live = shared.live();
            live.status = JobStatus::Running;
            live.attempt = record.attempt;
            live.relocations = record.relocations;
            live.restarts = record.attempt.0.saturating_sub(1).saturating_sub(record.relocations);
            // What the adoption will go on from (it sets the same when it ends): shown from the start, since
            // the job reads RUNNING, with its tasks' heartbeats, while the adoption is under way.
            live.restored_from = completed.first().cloned();
        }
        shared.open_adoption(record.attempt, execution_id);
        ctx.jobs.insert(shared.clone());
        let (decided, decision) = oneshot::channel();
        decisions.push(decision);
        let pending = PendingAdoption {
            attempt: record.attempt,
            execution_id,
            relocations: record.relocations,
            completed,
            decided: Some(decided),
        };
        tracing::info!(job_id = %job_id, attempt = record.attempt.0, execution_id = execution_id.0,
            "adopting a running job of an earlier leader");
        ctx.leadership.spawn(JobActor::adopting(ctx.clone(), shared, inbox, pending).run());
        return Ok(Ok(()));
    }
    let now = now_ms();
    let update = StatusUpdate { status: JobStatus::Created, at_ms: now, end_time_ms: None, failure_cause: None };
    ctx.store.update_status(job_id, &update).await?;
    let (shared, inbox) = JobShared::new(job_id.clone(), Arc::new(job), submitted_restore);
    {
        let mut live = shared.live();
        // The take-over is a restart too.
        live.restarts = record.attempt.0.saturating_sub(record.relocations);
        live.relocations = record.relocations;
        live.failure_cause = Some(JOBMANAGER_RESTARTED.to_string());
    }
    ctx.jobs.insert(shared.clone());
    tracing::info!(job_id = %job_id, attempt = record.attempt.0, retained_checkpoints = completed.len(),
        "taking over a job of an earlier JobManager");
    let actor = JobActor::resumed(ctx.clone(), shared, inbox, record.attempt, completed);
    ctx.leadership.spawn(actor.run());
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
