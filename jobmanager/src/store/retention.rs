//! Retention of metadata rows: without it `checkpoints` grows by a row per checkpoint for good (86,400 a
//! day for a job checkpointing every second) and `jobs` / `job_attempts` by every job ever submitted.
//!
//! Two rules, applied by one periodic task ([`run_metadata_retention`]), each pass deleting a bounded batch
//! so that a large backlog (the first pass after an upgrade) never holds the database for long:
//! 1. **Checkpoint history.** A job's checkpoint rows whose files are gone (`discarded`: failed, or
//!    completed and discarded by retention) are history; the newest [`RetentionPolicy::checkpoint_history_rows`]
//!    of them per job are kept for `GET /jobs/{id}/checkpoints`, older ones deleted. Rows whose files are
//!    kept (the retained checkpoints a restart or a failover restores from, savepoints) and rows in progress
//!    are never deleted by this rule. Keeping at least one history row keeps a job's highest checkpoint id,
//!    which new ids continue from.
//! 2. **Finished jobs.** A job in a terminal status whose end is older than
//!    [`RetentionPolicy::finished_job_age`] is deleted with its attempts and checkpoint rows (not its
//!    savepoint files, which are the user's). `None` keeps finished jobs for good.
use std::time::Duration;

use sluice_common::ids::JobId;
use sluice_common::lifecycle::job::JobStatus;
use sluice_common::lifecycle::{sql_list, CheckpointStatus};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::{ms, Store, StoreError};

/// How often the retention task runs a pass.
pub const METADATA_RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// The most checkpoint rows one pass deletes: a backlog is worked off over several passes.
pub const RETENTION_CHECKPOINT_ROWS_PER_PASS: u32 = 5_000;
/// The most finished jobs one pass deletes (each with all its rows, in its own transaction).
pub const RETENTION_JOBS_PER_PASS: u32 = 100;
/// The default of `--checkpoint-history-rows`: enough to see a job's recent failures in the API, small
/// enough that a year of one-second checkpoints stays a hundred rows.
pub const CHECKPOINT_HISTORY_ROWS_DEFAULT: u32 = 100;
/// The default of `--finished-job-retention-ms`: a week, long enough to look at what happened to a job.
pub const FINISHED_JOB_RETENTION_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the retention task keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// History rows (files gone) kept per job, newest first; at least 1.
    pub checkpoint_history_rows: u32,
    /// Finished jobs older than this are deleted; `None` keeps them.
    pub finished_job_age: Option<Duration>,
}

/// What one pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPass {
    pub checkpoint_rows: u64,
    pub jobs: u64,
}

impl Store {
    /// Deletes at most `batch` checkpoint history rows beyond the newest `keep` of each job (rule 1).
    pub async fn delete_checkpoint_history(&self, keep: u32, batch: u32) -> Result<u64, StoreError> {
        assert!(keep >= 1, "a job's newest checkpoint row is what its next checkpoint id continues from");
        let mut transaction = self.write().await?;
        let result = sqlx::query(
            "DELETE FROM checkpoints WHERE (job_id, checkpoint_id) IN (\
               SELECT job_id, checkpoint_id FROM (\
                 SELECT job_id, checkpoint_id, \
                   ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY checkpoint_id DESC) AS newer \
                 FROM checkpoints WHERE discarded = 1 AND status <> $1) history \
               WHERE history.newer > $2 LIMIT $3)",
        )
        .bind(CheckpointStatus::InProgress.as_str())
        .bind(i64::from(keep))
        .bind(i64::from(batch))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(result.rows_affected())
    }

    /// Deletes at most `batch` jobs that ended before `ended_before_ms`, each with its attempts and
    /// checkpoint rows in one transaction (rule 2). Returns how many jobs were deleted.
    pub async fn delete_finished_jobs(&self, ended_before_ms: u64, batch: u32) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT job_id FROM jobs WHERE status IN ({}) AND end_time_ms IS NOT NULL AND end_time_ms < $1 \
             ORDER BY end_time_ms LIMIT $2",
            sql_list(JobStatus::terminal(), JobStatus::as_str)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(ended_before_ms))
            .bind(i64::from(batch))
            .fetch_all(&self.pool)
            .await?;
        let mut deleted = 0;
        for row in rows {
            let job_id = JobId(row.try_get(0)?);
            let mut transaction = self.write().await?;
            for table in ["checkpoints", "job_attempts", "job_exceptions", "jobs"] {
                let sql = format!("DELETE FROM {table} WHERE job_id = $1");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(job_id.0.clone()).execute(&mut *transaction).await?;
            }
            transaction.commit().await?;
            tracing::info!(job_id = %job_id, "deleted a finished job's metadata (retention)");
            deleted += 1;
        }
        Ok(deleted)
    }

    /// One retention pass at `now_ms`.
    pub async fn apply_retention(&self, policy: &RetentionPolicy, now_ms: u64) -> Result<RetentionPass, StoreError> {
        let checkpoint_rows =
            self.delete_checkpoint_history(policy.checkpoint_history_rows, RETENTION_CHECKPOINT_ROWS_PER_PASS).await?;
        let jobs = match policy.finished_job_age {
            Some(age) => {
                let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                self.delete_finished_jobs(now_ms.saturating_sub(age_ms), RETENTION_JOBS_PER_PASS).await?
            }
            None => 0,
        };
        Ok(RetentionPass { checkpoint_rows, jobs })
    }
}

/// Runs a retention pass every [`METADATA_RETENTION_INTERVAL`] until `shutdown`. A failed pass (the
/// database is down) is logged and the next one tries again: retention is never urgent.
pub async fn run_metadata_retention(store: Store, policy: RetentionPolicy, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(METADATA_RETENTION_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match store.apply_retention(&policy, crate::cluster::now_ms()).await {
            Ok(pass) if pass != RetentionPass::default() => {
                tracing::info!(checkpoint_rows = pass.checkpoint_rows, jobs = pass.jobs, "metadata retention pass");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "a metadata retention pass failed; the next one tries again"),
        }
    }
}
