//! A job's failures and the recoveries that followed: one row per failed attempt, written when the failure
//! is noticed and updated as the recovery goes (`crate::job::exceptions`).
use serde::{Deserialize, Serialize};
use sluice_common::ids::JobId;
use sluice_common::lifecycle::FailureKind;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{from_ms, ms, Store, StoreError};

/// The most failures kept per job (the newest); older rows are deleted as new ones come.
pub const EXCEPTIONS_KEPT_MAX: u32 = 100;

/// One failure as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionRecord {
    /// The attempt that failed.
    pub attempt: u32,
    /// When the failure was noticed, ms since the epoch.
    pub time_ms: u64,
    pub cause: String,
    /// What kind of failure the task reported; None when no task reported one (a lost TaskManager, a failed
    /// checkpoint) or its TaskManager did not say.
    #[serde(default)]
    pub failure_kind: Option<FailureKind>,
    /// The task that failed, when one did.
    pub task: Option<String>,
    /// The TaskManager the failure came from, when known.
    pub task_manager_id: Option<String>,
    /// Whether the job restarted from it.
    pub restarted: bool,
    /// The recovery's phases, once every task of the next attempt runs.
    pub recovery: Option<RecoveryRecord>,
}

/// How long each phase of one recovery took, in ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// From the last sign of life of what failed to the failure noticed (0 when a task reported it).
    pub detection_ms: u64,
    /// From the failure noticed to every task of the failed attempt gone.
    pub cancel_ms: u64,
    /// The restart delay and the wait for slots.
    pub scheduling_ms: u64,
    /// From deployment to every task running (state restored).
    pub restore_ms: u64,
    /// From every task running to the first checkpoint of the new attempt completed; None until then (or
    /// without checkpoints).
    pub catch_up_ms: Option<u64>,
    /// Failure noticed to every task running again (what `job_recovery_duration_seconds` measures), plus
    /// detection.
    pub total_ms: u64,
}

impl Store {
    /// Records (or, for an attempt already recorded, replaces) a failure, and deletes the job's rows beyond
    /// the newest [`EXCEPTIONS_KEPT_MAX`].
    pub async fn record_exception(&self, job_id: &JobId, exception: &ExceptionRecord) -> Result<(), StoreError> {
        let recovery_json = match &exception.recovery {
            Some(recovery) => Some(serde_json::to_string(recovery).map_err(|e| StoreError::Corrupt(e.to_string()))?),
            None => None,
        };
        let mut transaction = self.write().await?;
        sqlx::query("DELETE FROM job_exceptions WHERE job_id = $1 AND attempt = $2")
            .bind(job_id.0.clone())
            .bind(i64::from(exception.attempt))
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO job_exceptions (job_id, attempt, time_ms, cause, task, task_manager_id, restarted, \
             recovery_json, failure_kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(job_id.0.clone())
        .bind(i64::from(exception.attempt))
        .bind(ms(exception.time_ms))
        .bind(exception.cause.clone())
        .bind(exception.task.clone())
        .bind(exception.task_manager_id.clone())
        .bind(i64::from(exception.restarted))
        .bind(recovery_json)
        .bind(exception.failure_kind.map(|kind| kind.as_str()))
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "DELETE FROM job_exceptions WHERE job_id = $1 AND attempt NOT IN (\
               SELECT attempt FROM job_exceptions WHERE job_id = $1 ORDER BY attempt DESC LIMIT $2)",
        )
        .bind(job_id.0.clone())
        .bind(i64::from(EXCEPTIONS_KEPT_MAX))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// A job's failures, newest first (at most [`EXCEPTIONS_KEPT_MAX`]).
    pub async fn exceptions(&self, job_id: &JobId) -> Result<Vec<ExceptionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT attempt, time_ms, cause, task, task_manager_id, restarted, recovery_json, failure_kind \
             FROM job_exceptions \
             WHERE job_id = $1 ORDER BY attempt DESC LIMIT $2",
        )
        .bind(job_id.0.clone())
        .bind(i64::from(EXCEPTIONS_KEPT_MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(exception_record).collect()
    }
}

fn exception_record(row: &AnyRow) -> Result<ExceptionRecord, StoreError> {
    let attempt = row.try_get::<i64, _>(0)?;
    let recovery_json: Option<String> = row.try_get(6)?;
    let recovery = match recovery_json {
        Some(json) => Some(
            serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("a recovery record of attempt {attempt}: {e}")))?,
        ),
        None => None,
    };
    let failure_kind = match row.try_get::<Option<String>, _>(7)? {
        Some(text) => Some(
            text.parse::<FailureKind>()
                .map_err(|e| StoreError::Corrupt(format!("the failure of attempt {attempt}: {e}")))?,
        ),
        None => None,
    };
    Ok(ExceptionRecord {
        attempt: u32::try_from(attempt).map_err(|_| StoreError::Corrupt(format!("attempt {attempt}")))?,
        time_ms: from_ms(row.try_get::<i64, _>(1)?),
        cause: row.try_get(2)?,
        failure_kind,
        task: row.try_get(3)?,
        task_manager_id: row.try_get(4)?,
        restarted: row.try_get::<i64, _>(5)? != 0,
        recovery,
    })
}
