//! Checkpoint metadata: one row per checkpoint (or savepoint) of a job, written when the coordinator
//! triggers it and updated once when it completes or fails.
use serde::Serialize;
use sluice_common::ids::JobId;
use sluice_common::lifecycle::{CheckpointKind, CheckpointStatus};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{from_ms, ms, Store, StoreError};

/// The most checkpoints `GET /jobs/{id}/checkpoints` lists (the newest).
pub const CHECKPOINTS_LISTED_MAX: u32 = 100;

/// A checkpoint as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointRecord {
    /// Its id, increasing within the job.
    pub id: u64,
    /// The job attempt it belongs to.
    pub attempt: u32,
    /// Who asked for it.
    pub kind: CheckpointKind,
    /// Where it is in its life.
    pub status: CheckpointStatus,
    /// When it was triggered, ms since the epoch.
    pub trigger_ms: u64,
    /// When it completed or failed.
    pub end_ms: Option<u64>,
    /// Its directory.
    pub location: String,
    pub state_size_bytes: u64,
    pub alignment_ms: u64,
    pub sync_ms: u64,
    pub async_ms: u64,
    /// Why it failed.
    pub failure: Option<String>,
    /// Whether its files were deleted (retention, or the job's end).
    pub discarded: bool,
}

impl CheckpointRecord {
    /// Trigger to completion (or failure), when it has ended.
    pub fn duration_ms(&self) -> Option<u64> {
        self.end_ms.map(|end| end.saturating_sub(self.trigger_ms))
    }

    /// Whether a restart may start from it: a completed periodic checkpoint whose files are kept.
    pub fn is_restorable_checkpoint(&self) -> bool {
        self.status == CheckpointStatus::Completed && self.kind == CheckpointKind::Checkpoint && !self.discarded
    }
}

/// What a completed checkpoint records.
#[derive(Clone, Debug, Default)]
pub struct CompletedCheckpoint {
    pub end_ms: u64,
    /// Where it ended up (a savepoint moves to its own directory).
    pub location: String,
    pub state_size_bytes: u64,
    pub alignment_ms: u64,
    pub sync_ms: u64,
    pub async_ms: u64,
    pub tasks_json: String,
}

impl Store {
    /// Records a checkpoint the coordinator just triggered, IN_PROGRESS.
    pub async fn insert_checkpoint(
        &self,
        job_id: &JobId,
        id: u64,
        attempt: u32,
        kind: CheckpointKind,
        trigger_ms: u64,
        location: &str,
    ) -> Result<(), StoreError> {
        let mut transaction = self.write().await?;
        sqlx::query(
            "INSERT INTO checkpoints (job_id, checkpoint_id, attempt, kind, status, trigger_ms, location) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(job_id.0.clone())
        .bind(ms(id))
        .bind(i64::from(attempt))
        .bind(kind.as_str())
        .bind(CheckpointStatus::InProgress.as_str())
        .bind(ms(trigger_ms))
        .bind(location.to_string())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Marks an in-progress checkpoint COMPLETED with its statistics, in one statement (so one transaction).
    /// Idempotent: true also when it is COMPLETED already at the same location (a retry whose earlier try
    /// landed although its answer was lost). False when it was not in progress otherwise (failed, or unknown).
    pub async fn complete_checkpoint(
        &self,
        job_id: &JobId,
        id: u64,
        done: &CompletedCheckpoint,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.write().await?;
        let result = sqlx::query(
            "UPDATE checkpoints SET status = $1, end_ms = $2, state_size_bytes = $3, alignment_ms = $4, \
             sync_ms = $5, async_ms = $6, tasks_json = $7, location = $8 \
             WHERE job_id = $9 AND checkpoint_id = $10 AND status = $11",
        )
        .bind(CheckpointStatus::Completed.as_str())
        .bind(ms(done.end_ms))
        .bind(ms(done.state_size_bytes))
        .bind(ms(done.alignment_ms))
        .bind(ms(done.sync_ms))
        .bind(ms(done.async_ms))
        .bind(done.tasks_json.clone())
        .bind(done.location.clone())
        .bind(job_id.0.clone())
        .bind(ms(id))
        .bind(CheckpointStatus::InProgress.as_str())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        if result.rows_affected() == 1 {
            return Ok(true);
        }
        let recorded = self.checkpoint(job_id, id).await?;
        Ok(recorded.is_some_and(|c| c.status == CheckpointStatus::Completed && c.location == done.location))
    }

    /// Marks an in-progress checkpoint FAILED with the reason.
    pub async fn fail_checkpoint(&self, job_id: &JobId, id: u64, end_ms: u64, reason: &str) -> Result<(), StoreError> {
        let mut transaction = self.write().await?;
        sqlx::query(
            "UPDATE checkpoints SET status = $1, end_ms = $2, failure = $3, discarded = 1 \
             WHERE job_id = $4 AND checkpoint_id = $5 AND status = $6",
        )
        .bind(CheckpointStatus::Failed.as_str())
        .bind(ms(end_ms))
        .bind(reason.to_string())
        .bind(job_id.0.clone())
        .bind(ms(id))
        .bind(CheckpointStatus::InProgress.as_str())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Records that a completed checkpoint's files were deleted.
    pub async fn discard_checkpoint(&self, job_id: &JobId, id: u64) -> Result<(), StoreError> {
        let mut transaction = self.write().await?;
        sqlx::query("UPDATE checkpoints SET discarded = 1 WHERE job_id = $1 AND checkpoint_id = $2")
            .bind(job_id.0.clone())
            .bind(ms(id))
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Fails every checkpoint still IN_PROGRESS (their coordinator is gone: a JobManager restart).
    pub async fn fail_in_progress_checkpoints(&self, end_ms: u64, reason: &str) -> Result<u64, StoreError> {
        let mut transaction = self.write().await?;
        let result = sqlx::query(
            "UPDATE checkpoints SET status = $1, end_ms = $2, failure = $3, discarded = 1 WHERE status = $4",
        )
        .bind(CheckpointStatus::Failed.as_str())
        .bind(ms(end_ms))
        .bind(reason.to_string())
        .bind(CheckpointStatus::InProgress.as_str())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(result.rows_affected())
    }

    /// The highest checkpoint id of a job so far (0 when none): ids go on from there.
    pub async fn max_checkpoint_id(&self, job_id: &JobId) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT MAX(checkpoint_id) FROM checkpoints WHERE job_id = $1")
            .bind(job_id.0.clone())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.map_or(0, from_ms))
    }

    /// A job's checkpoints, newest first, at most `limit`.
    pub async fn checkpoints(&self, job_id: &JobId, limit: u32) -> Result<Vec<CheckpointRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT checkpoint_id, attempt, kind, status, trigger_ms, end_ms, location, state_size_bytes, \
             alignment_ms, sync_ms, async_ms, failure, discarded FROM checkpoints WHERE job_id = $1 \
             ORDER BY checkpoint_id DESC LIMIT $2",
        )
        .bind(job_id.0.clone())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_record).collect()
    }

    /// A job's restorable checkpoints (completed periodic checkpoints whose files are kept), newest first, at
    /// most `limit`. Not a filter over [`Store::checkpoints`]: newer failed rows or savepoints must not hide
    /// them (a take-over that found none would start the job from its beginning).
    pub async fn restorable_checkpoints(
        &self,
        job_id: &JobId,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT checkpoint_id, attempt, kind, status, trigger_ms, end_ms, location, state_size_bytes, \
             alignment_ms, sync_ms, async_ms, failure, discarded FROM checkpoints WHERE job_id = $1 \
             AND status = $2 AND kind = $3 AND discarded = 0 ORDER BY checkpoint_id DESC LIMIT $4",
        )
        .bind(job_id.0.clone())
        .bind(CheckpointStatus::Completed.as_str())
        .bind(CheckpointKind::Checkpoint.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_record).collect()
    }

    /// One checkpoint with its tasks' acknowledgements (JSON; recorded once it completed).
    pub async fn checkpoint_with_tasks(
        &self,
        job_id: &JobId,
        id: u64,
    ) -> Result<(Option<CheckpointRecord>, Option<String>), StoreError> {
        let row = sqlx::query(
            "SELECT checkpoint_id, attempt, kind, status, trigger_ms, end_ms, location, state_size_bytes, \
             alignment_ms, sync_ms, async_ms, failure, discarded, tasks_json FROM checkpoints WHERE job_id = $1 \
             AND checkpoint_id = $2",
        )
        .bind(job_id.0.clone())
        .bind(ms(id))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok((None, None)) };
        Ok((Some(checkpoint_record(&row)?), row.try_get(13)?))
    }

    /// One checkpoint of a job.
    pub async fn checkpoint(&self, job_id: &JobId, id: u64) -> Result<Option<CheckpointRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT checkpoint_id, attempt, kind, status, trigger_ms, end_ms, location, state_size_bytes, \
             alignment_ms, sync_ms, async_ms, failure, discarded FROM checkpoints WHERE job_id = $1 \
             AND checkpoint_id = $2",
        )
        .bind(job_id.0.clone())
        .bind(ms(id))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(checkpoint_record).transpose()
    }

    /// A job's checkpoint counts by status.
    pub async fn checkpoint_counts(&self, job_id: &JobId) -> Result<Vec<(CheckpointStatus, u64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM checkpoints WHERE job_id = $1 GROUP BY status")
            .bind(job_id.0.clone())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok((parse_column(row, 0)?, from_ms(row.try_get(1)?)))).collect()
    }
}

fn checkpoint_record(row: &AnyRow) -> Result<CheckpointRecord, StoreError> {
    Ok(CheckpointRecord {
        id: from_ms(row.try_get(0)?),
        attempt: u32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0),
        kind: parse_column(row, 2)?,
        status: parse_column(row, 3)?,
        trigger_ms: from_ms(row.try_get(4)?),
        end_ms: row.try_get::<Option<i64>, _>(5)?.map(from_ms),
        location: row.try_get(6)?,
        state_size_bytes: from_ms(row.try_get(7)?),
        alignment_ms: from_ms(row.try_get(8)?),
        sync_ms: from_ms(row.try_get(9)?),
        async_ms: from_ms(row.try_get(10)?),
        failure: row.try_get(11)?,
        discarded: row.try_get::<i64, _>(12)? != 0,
    })
}

/// A text column that names a lifecycle value; text that names none is a corrupt row, reported as such.
fn parse_column<T>(row: &AnyRow, index: usize) -> Result<T, StoreError>
where
    T: std::str::FromStr<Err = sluice_common::lifecycle::UnknownName>,
{
    let text: String = row.try_get(index)?;
    text.parse().map_err(|unknown: sluice_common::lifecycle::UnknownName| {
        StoreError::Corrupt(format!("checkpoints: {unknown}"))
    })
}
