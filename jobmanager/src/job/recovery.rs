//! What happens at start-up to jobs a previous JobManager left unfinished.
//!
//! Recovery from checkpoints is a later issue. Until then a job found in a non-terminal status has no
//! actor and no tasks it can trust, so its record is closed as FAILED with the cause "JobManager
//! restarted"; a status text that names no state closes it as FAILED with that text in the cause. This
//! writes the store directly, outside the transition table, because no actor owns such a job: it is the
//! end of an old JobManager's record, not a transition of a live job. The later recovery will replace
//! this function with SUSPENDED → CREATED and a fresh actor.
use sluice_common::ids::JobId;

use crate::cluster::now_ms;
use crate::job::state::JobStatus;
use crate::store::{StatusUpdate, Store, StoreError};

/// The cause recorded for jobs that were running when the JobManager stopped.
pub const JOBMANAGER_RESTARTED: &str = "JobManager restarted";

/// Closes every unfinished job of an earlier JobManager. Returns the jobs closed, with their cause.
pub async fn close_unfinished_jobs(store: &Store) -> Result<Vec<(JobId, String)>, StoreError> {
    let mut closed = Vec::new();
    for (job_id, status_text) in store.unfinished_jobs().await? {
        let cause = match status_text.parse::<JobStatus>() {
            Ok(_) => JOBMANAGER_RESTARTED.to_string(),
            Err(unknown) => format!("{unknown}; the job cannot be resumed"),
        };
        let now = now_ms();
        let update = StatusUpdate {
            status: JobStatus::Failed,
            at_ms: now,
            end_time_ms: Some(now),
            failure_cause: Some(cause.clone()),
        };
        store.update_status(&job_id, &update).await?;
        tracing::warn!(job_id = %job_id, from = %status_text, to = "FAILED", %cause, "closed a job of an earlier JobManager");
        closed.push((job_id, cause));
    }
    Ok(closed)
}
