//! Choosing the checkpoint a deployment starts from, without ever rewinding by accident.
//!
//! A retained checkpoint is tried newest first. What is wrong with it decides what happens next
//! ([`RestoreError`]): a checkpoint proven unusable (its `_metadata` absent or damaged, a file missing, a
//! job that no longer fits) is skipped for the previous retained one, as Flink does; a store that does not
//! answer says nothing of the checkpoint, so the actor waits and asks again (back-off from
//! [`STORAGE_RETRY_BACKOFF_FIRST`] to [`STORAGE_RETRY_BACKOFF_MAX`], the reason in the job's status) for as
//! long as the outage lasts, or until the job is cancelled. Falling back, or starting from the beginning,
//! because storage was down would rewind the sources and duplicate output.
//!
//! A job that has retained checkpoints and none of them usable fails with the reason rather than starting
//! from the beginning.
use std::future::Future;
use std::time::Duration;

use sluice_common::lifecycle::job::JobStatus;
use sluice_common::proto::RestoreSpec;
use tokio::time::Instant;

use crate::checkpoint::{plan_restore, retained_checkpoint, Coordinator, RestoreError, RetainedCheckpoint};
use crate::job::actor::{JobActor, Next};

/// The first pause before asking an unreachable store again.
pub(crate) const STORAGE_RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The longest pause between two questions to an unreachable store (the pause doubles up to it). Short
/// enough that a job resumes within seconds of the store coming back.
pub(crate) const STORAGE_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why the actor stopped waiting for storage before it answered.
pub(in crate::job) enum Interrupted {
    /// The JobManager is shutting down; the job stays as it is in the store.
    Shutdown,
    /// A cancel was requested.
    Cancel,
}

/// The checkpoint the next deployment starts from.
pub(in crate::job) enum Choice {
    /// This one.
    Checkpoint(RestoreSpec),
    /// The job has no retained checkpoint: it starts where it was submitted to (a savepoint, or the beginning).
    NoCheckpoint,
    /// Every retained checkpoint is proven unusable: the job must not run (the cause says why).
    NoneUsable(String),
}

impl JobActor {
    /// Runs `attempt` until the store answers: while it is unreachable, waits with back-off (the reason in the
    /// job's status) and tries again; a cancel or a shutdown ends the wait. Returns the answer, the checkpoint
    /// itself being unusable included.
    pub(in crate::job) async fn until_storage_answers<T, F, Fut>(
        &mut self,
        what: &str,
        mut attempt: F,
    ) -> Result<Result<T, String>, Interrupted>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RestoreError>>,
    {
        let mut backoff = STORAGE_RETRY_BACKOFF_FIRST;
        let mut waited = false;
        loop {
            match attempt().await {
                Ok(value) => {
                    if waited {
                        tracing::info!(job_id = %self.shared.job_id, what, "checkpoint storage answers again");
                        self.shared.live().reason = None;
                    }
                    return Ok(Ok(value));
                }
                Err(RestoreError::Unusable(why)) => return Ok(Err(why)),
                Err(unavailable @ RestoreError::Unavailable(_)) => {
                    if !waited {
                        tracing::warn!(job_id = %self.shared.job_id, what, error = %unavailable,
                            "waiting for checkpoint storage; the job will not start from an older state meanwhile");
                    }
                    waited = true;
                    self.pause(format!("waiting for checkpoint storage to {what}: {unavailable}"), backoff).await?;
                    backoff = (backoff * 2).min(STORAGE_RETRY_BACKOFF_MAX);
                }
            }
        }
    }

    /// Shows `reason` (with the time to the next try) and waits `backoff`, or until a cancel or a shutdown.
    async fn pause(&mut self, reason: String, backoff: Duration) -> Result<(), Interrupted> {
        self.set_reason(format!("{reason} (next try in {} ms)", backoff.as_millis()));
        let wake = Instant::now() + backoff;
        loop {
            if self.cancel_requested().await {
                return Err(Interrupted::Cancel);
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Err(Interrupted::Shutdown),
                _ = self.shared.desired_changed.notified() => {}
                _ = tokio::time::sleep_until(wake) => return Ok(()),
            }
        }
    }

    /// The newest retained checkpoint that can start the job (see the module's doc). Checkpoints whose
    /// completion is in doubt are settled first (the metadata store waited for like checkpoint storage).
    pub(in crate::job) async fn latest_restore_point(&mut self) -> Result<Choice, Interrupted> {
        let mut backoff = STORAGE_RETRY_BACKOFF_FIRST;
        loop {
            let settled = match self.checkpoints.as_mut() {
                Some(coordinator) => coordinator.settle_before_restore().await,
                None => Ok(()),
            };
            let Err(e) = settled else { break };
            self.pause(format!("waiting for the metadata store to settle a checkpoint in doubt: {e}"), backoff).await?;
            backoff = (backoff * 2).min(STORAGE_RETRY_BACKOFF_MAX);
        }
        let candidates = self.checkpoints.as_ref().map(Coordinator::restore_candidates).unwrap_or_default();
        self.choose_among(candidates).await
    }

    /// The first of `candidates` (newest first) that can start the job.
    async fn choose_among(&mut self, candidates: Vec<(u64, String)>) -> Result<Choice, Interrupted> {
        if candidates.is_empty() {
            return Ok(Choice::NoCheckpoint);
        }
        let job = self.shared.job.clone();
        let mut problems = Vec::new();
        for (id, location) in candidates {
            let what = format!("read checkpoint {id}");
            let planned = self
                .until_storage_answers(&what, || {
                    let (job, location) = (job.clone(), location.clone());
                    async move { plan_restore(&location, &job).await }
                })
                .await?;
            match planned {
                Ok(spec) => {
                    tracing::info!(job_id = %self.shared.job_id, checkpoint = id, %location, "restoring from checkpoint");
                    return Ok(Choice::Checkpoint(spec));
                }
                Err(why) => {
                    tracing::warn!(job_id = %self.shared.job_id, checkpoint = id, error = %why,
                        "cannot restore from this checkpoint; trying the previous retained one");
                    problems.push(format!("checkpoint {id}: {why}"));
                }
            }
        }
        Ok(Choice::NoneUsable(format!("none of its retained checkpoints can be restored ({})", problems.join("; "))))
    }

    /// Reads what the retained checkpoints `completed` (newest first) reference, oldest first as the coordinator
    /// keeps them, so that retention goes on deleting them in turn and a restart can restore from them. Storage
    /// that does not answer is waited for; one proven unusable is left to the sweep.
    pub(in crate::job) async fn read_retained(
        &mut self,
        completed: &[(u64, String)],
    ) -> Result<Vec<RetainedCheckpoint>, Interrupted> {
        let mut retained = Vec::new();
        for (id, location) in completed.iter().rev() {
            let what = format!("read checkpoint {id}");
            let read = self
                .until_storage_answers(&what, || {
                    let location = location.clone();
                    async move { retained_checkpoint(*id, &location).await }
                })
                .await?;
            match read {
                Ok(checkpoint) => retained.push(checkpoint),
                Err(why) => {
                    tracing::warn!(job_id = %self.shared.job_id, checkpoint = id, error = %why, "cannot adopt a retained checkpoint")
                }
            }
        }
        Ok(retained)
    }

    /// For a job an earlier JobManager ran: reads what its retained checkpoints (`completed`, newest first)
    /// reference, so that retention goes on deleting them in turn, and chooses the one the next attempt
    /// starts from. Storage that does not answer is waited for. Err with the next transition when the job
    /// cannot go on (cancelled, or no retained checkpoint usable); None on shutdown.
    pub(in crate::job) async fn take_over_checkpoints(
        &mut self,
        completed: Vec<(u64, String)>,
    ) -> Option<Result<(), Next>> {
        match self.read_retained(&completed).await {
            Ok(adopted) => self.adopted = adopted,
            Err(Interrupted::Shutdown) => return None,
            Err(Interrupted::Cancel) => return Some(Err(Next::to(JobStatus::Canceled))),
        }
        match self.choose_among(completed).await {
            Err(Interrupted::Shutdown) => None,
            Err(Interrupted::Cancel) => Some(Err(Next::to(JobStatus::Canceled))),
            Ok(Choice::Checkpoint(spec)) => {
                tracing::info!(job_id = %self.shared.job_id, checkpoint = spec.checkpoint_id, from = %spec.dir,
                    attempt = %self.attempt, "resuming a job of an earlier JobManager");
                self.shared.live().restored_from = Some((spec.checkpoint_id, spec.dir.clone()));
                self.restore = Some(spec);
                Some(Ok(()))
            }
            Ok(Choice::NoCheckpoint) => {
                tracing::warn!(job_id = %self.shared.job_id, attempt = %self.attempt,
                    "resuming a job of an earlier JobManager from where it was submitted: it has no completed checkpoint");
                Some(Ok(()))
            }
            Ok(Choice::NoneUsable(why)) => {
                Some(Err(Next::failed(JobStatus::Failed, format!("{}; {why}", super::recovery::JOBMANAGER_RESTARTED))))
            }
        }
    }
}
