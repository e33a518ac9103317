//! The metadata store: jobs, their graphs, statuses and attempts, in SQL (sqlx).
//!
//! The store holds the *desired* and the *recorded* state of every job; the job's actor holds the live
//! state and writes each transition here before it acts on the next one. SQLite (a file under the data
//! directory) is the default so that a JobManager needs no set-up; a `postgres://` URL puts the metadata in
//! PostgreSQL instead. One code path serves both through sqlx's `Any` driver: the migrations in
//! `jobmanager/migrations/` use only portable SQL (TEXT and BIGINT), and queries number their parameters
//! `$1, $2, ...` in the order they appear, which PostgreSQL requires and SQLite reads the same way. Queries
//! are checked at run time (not with `query!`), so building needs no database.
//!
//! Statuses are stored as text. Text that names no status is not an error here: [`JobRecord::status`]
//! carries it, and callers turn it into a FAILED job with a reason.
mod checkpoints;
mod exceptions;
mod lease;
mod retention;

use std::time::Duration;

use sluice_common::ids::{Attempt, ExecutionId, JobId};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, Pool};
use sqlx::{Executor, Row};

pub use checkpoints::{CheckpointRecord, CompletedCheckpoint, CHECKPOINTS_LISTED_MAX};
pub use exceptions::{ExceptionRecord, RecoveryRecord, EXCEPTIONS_KEPT_MAX};
pub use lease::{Fence, LeaseRecord};
pub use retention::{
    run_metadata_retention, RetentionPass, RetentionPolicy, CHECKPOINT_HISTORY_ROWS_DEFAULT,
    FINISHED_JOB_RETENTION_DEFAULT, METADATA_RETENTION_INTERVAL, RETENTION_CHECKPOINT_ROWS_PER_PASS,
    RETENTION_JOBS_PER_PASS,
};
use sluice_common::lifecycle::job::{DesiredStatus, JobStatus, UnknownJobStatus};
use sluice_common::lifecycle::sql_list;

/// Connections in the pool. SQLite serializes writers anyway; a few connections let REST reads proceed
/// while an actor writes. At the limit, callers wait up to [`STORE_ACQUIRE_TIMEOUT`].
pub const STORE_CONNECTIONS_MAX: u32 = 4;
/// How long a query waits for a pooled connection before it fails with a (retryable) error.
pub const STORE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// What every SQLite connection sets first: readers do not block the writer (WAL); a locked database is
/// waited for up to 5 s rather than an error; foreign keys are enforced.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;";
/// The most jobs `GET /jobs` lists (the newest). Older jobs stay readable one by one.
pub const JOBS_LISTED_MAX: u32 = 1000;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached; retrying may help.
    #[error("metadata store: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("metadata store migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds what this build cannot read (a status text that names no status, say); retrying does
    /// not help.
    #[error("metadata store: a corrupt row: {0}")]
    Corrupt(String),
    /// This JobManager no longer leads: the lease's epoch is not its own, so the write was refused (fencing).
    /// Retrying does not help; the JobManager steps down.
    #[error(
        "metadata store: write refused, this JobManager no longer leads (its epoch {held}, the lease's {current})"
    )]
    Fenced {
        /// The epoch this JobManager led under (0: it does not lead).
        held: u64,
        /// The lease's epoch now.
        current: u64,
    },
}

/// A job to insert at submission.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Its id.
    pub job_id: JobId,
    /// Its name.
    pub name: String,
    /// The validated graph, proto3 JSON.
    pub graph_json: String,
    /// Its chains, proto3 JSON array.
    pub chains_json: String,
    /// Submission time, ms since the epoch.
    pub start_time_ms: u64,
    /// The checkpoint or savepoint it was submitted to start from (proto3 JSON `RestoreSpec`).
    pub submitted_restore_json: Option<String>,
}

/// A job as recorded.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// Its id.
    pub job_id: JobId,
    /// Its name.
    pub name: String,
    /// The validated graph, proto3 JSON.
    pub graph_json: String,
    /// Its chains, proto3 JSON array.
    pub chains_json: String,
    /// The recorded status, or the unknown text found.
    pub status: Result<JobStatus, UnknownJobStatus>,
    /// What a user asked for, if anything (text that names no wish reads as none).
    pub desired_status: Option<DesiredStatus>,
    /// The current attempt (0 before the first deployment).
    pub attempt: Attempt,
    /// How many attempts were moves off a leaving TaskManager rather than restarts after a failure.
    pub relocations: u32,
    /// Submission time, ms since the epoch.
    pub start_time_ms: u64,
    /// When the job ended, ms since the epoch.
    pub end_time_ms: Option<u64>,
    /// Why it failed.
    pub failure_cause: Option<String>,
    /// The last metrics of every task, once the job has ended (proto3 JSON array of TaskMetrics).
    pub final_metrics_json: Option<String>,
    /// The checkpoint or savepoint it was submitted to start from (proto3 JSON `RestoreSpec`).
    pub submitted_restore_json: Option<String>,
}

/// A transition to record.
#[derive(Clone, Debug)]
pub struct StatusUpdate {
    /// The new status.
    pub status: JobStatus,
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Set when the status is terminal.
    pub end_time_ms: Option<u64>,
    /// Set when the job failed.
    pub failure_cause: Option<String>,
}

/// The metadata store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool<Any>,
    /// PostgreSQL (else SQLite): writes check the fence there (a SQLite store serves one JobManager, see
    /// [`Store::lock_sqlite`]), and the database clock is read with the backend's own function.
    postgres: bool,
    /// The leader epoch writes are conditional on; None: unconditional (unit tests, tools).
    fence: Option<std::sync::Arc<Fence>>,
}

/// The columns [`job_record`] reads, as a literal so that queries stay `&'static str`.
macro_rules! job_columns {
    () => {
        "job_id, name, graph_json, chains_json, status, desired_status, attempt, start_time_ms, end_time_ms, \
         failure_cause, final_metrics_json, submitted_restore_json, relocations"
    };
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_ms(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Store {
    /// Opens the database at `url` (`sqlite://FILE`, created if missing, or `postgres://...`) and applies the
    /// migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(STORE_CONNECTIONS_MAX)
            .acquire_timeout(STORE_ACQUIRE_TIMEOUT)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if sqlite {
                        connection.execute(sqlx::raw_sql(SQLITE_PRAGMAS)).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool, postgres: url.starts_with("postgres"), fence: None })
    }

    /// This store with every metadata write conditional on `fence` (see [`Store::write`]).
    pub fn fenced(mut self, fence: std::sync::Arc<Fence>) -> Store {
        self.fence = Some(fence);
        self
    }

    /// Begins a write transaction. With a fence on PostgreSQL, it first reads the lease's epoch with a shared
    /// row lock held until the transaction ends, and refuses ([`StoreError::Fenced`]) unless the epoch is the
    /// fence's: a new leader takes the lease by updating that row, which waits for every such transaction to
    /// end, so no write of an old leader commits after a new leader took over. (SQLite needs no check: one
    /// JobManager per file.)
    pub(crate) async fn write(&self) -> Result<sqlx::Transaction<'static, Any>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        if let (Some(fence), true) = (&self.fence, self.postgres) {
            let row = sqlx::query("SELECT epoch FROM leader_lease WHERE id = 1 FOR SHARE")
                .fetch_optional(&mut *transaction)
                .await?;
            let current = match row {
                Some(row) => from_ms(row.try_get::<i64, _>(0)?),
                None => 0,
            };
            let held = fence.epoch();
            if held == 0 || held != current {
                fence.deposed(current);
                return Err(StoreError::Fenced { held, current });
            }
        }
        Ok(transaction)
    }

    /// For a SQLite store (a file), an exclusive lock that keeps any other JobManager off it while the returned
    /// value lives: a SQLite store serves one JobManager (two would both resume every job). None for PostgreSQL or
    /// an in-memory database. The lock is `flock` on `<file>.lock`, released by the kernel when the process ends,
    /// however it ends.
    pub fn lock_sqlite(url: &str) -> Result<Option<std::fs::File>, String> {
        use std::str::FromStr as _;
        if !url.starts_with("sqlite:") || url.contains("mode=memory") {
            return Ok(None);
        }
        // The file sqlx opens (percent-decoded), canonicalized through its directory, so that another spelling
        // of the same file (a symlink, `./`, `%20`) takes the same lock.
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|e| format!("{url}: {e}"))?;
        let file = options.get_filename();
        if file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:") {
            return Ok(None);
        }
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let parent = parent.canonicalize().map_err(|e| format!("the directory of {}: {e}", file.display()))?;
        let path = parent.join(file.file_name().unwrap_or_default());
        let path = path.canonicalize().unwrap_or(path).display().to_string();
        let lock_path = format!("{path}.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open the store's lock file {lock_path}: {e}"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "another JobManager already uses the SQLite metadata store {path} (it holds {lock_path}); a SQLite \
                 store serves one JobManager: stop the other one, give this one another --data-dir, or use PostgreSQL \
                 (DATABASE_URL) to run several"
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {lock_path}: {e}")),
        }
    }

    /// "SQLite" or "PostgreSQL".
    pub async fn backend_name(&self) -> Result<String, StoreError> {
        let connection = self.pool.acquire().await?;
        Ok(connection.backend_name().to_string())
    }

    /// Inserts a newly submitted job in status CREATED.
    pub async fn insert_job(&self, job: &NewJob) -> Result<(), StoreError> {
        let mut transaction = self.write().await?;
        sqlx::query(
            "INSERT INTO jobs (job_id, name, graph_json, chains_json, status, attempt, start_time_ms, status_changed_ms, \
             submitted_restore_json) VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8)",
        )
        .bind(job.job_id.0.clone())
        .bind(job.name.clone())
        .bind(job.graph_json.clone())
        .bind(job.chains_json.clone())
        .bind(JobStatus::Created.as_str())
        .bind(ms(job.start_time_ms))
        .bind(ms(job.start_time_ms))
        .bind(job.submitted_restore_json.clone())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The job with this id.
    pub async fn job(&self, job_id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE job_id = $1");
        let row = sqlx::query(sql).bind(job_id.0.clone()).fetch_optional(&self.pool).await?;
        row.map(|row| job_record(&row)).transpose()
    }

    /// The newest jobs (at most [`JOBS_LISTED_MAX`]), newest first.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let sql = concat!("SELECT ", job_columns!(), " FROM jobs ORDER BY start_time_ms DESC, job_id LIMIT $1");
        let rows = sqlx::query(sql).bind(i64::from(JOBS_LISTED_MAX)).fetch_all(&self.pool).await?;
        rows.iter().map(job_record).collect()
    }

    /// Records a transition.
    pub async fn update_status(&self, job_id: &JobId, update: &StatusUpdate) -> Result<(), StoreError> {
        let mut transaction = self.write().await?;
        sqlx::query(
            "UPDATE jobs SET status = $1, status_changed_ms = $2, end_time_ms = COALESCE($3, end_time_ms), \
             failure_cause = COALESCE($4, failure_cause) WHERE job_id = $5",
        )
        .bind(update.status.as_str())
        .bind(ms(update.at_ms))
        .bind(update.end_time_ms.map(ms))
        .bind(update.failure_cause.clone())
        .bind(job_id.0.clone())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Records a deployment: the job's current attempt becomes `attempt`; `moved`: it moves the job off a
    /// leaving TaskManager (counted in `relocations`, not as a restart).
    pub async fn record_attempt(
        &self,
        job_id: &JobId,
        attempt: Attempt,
        execution_id: ExecutionId,
        placements_json: &str,
        at_ms: u64,
        moved: bool,
    ) -> Result<(), StoreError> {
        let mut transaction = self.write().await?;
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, execution_id, placements_json, deployed_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(job_id.0.clone())
        .bind(i64::from(attempt.0))
        .bind(execution_id.0.to_string())
        .bind(placements_json.to_string())
        .bind(ms(at_ms))
        .execute(&mut *transaction)
        .await?;
        sqlx::query("UPDATE jobs SET attempt = $1, relocations = relocations + $2 WHERE job_id = $3")
            .bind(i64::from(attempt.0))
            .bind(i64::from(moved))
            .bind(job_id.0.clone())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The execution id and placements (JSON) recorded for one attempt of a job.
    pub async fn attempt(&self, job_id: &JobId, attempt: Attempt) -> Result<Option<(ExecutionId, String)>, StoreError> {
        let row =
            sqlx::query("SELECT execution_id, placements_json FROM job_attempts WHERE job_id = $1 AND attempt = $2")
                .bind(job_id.0.clone())
                .bind(i64::from(attempt.0))
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let execution: String = row.try_get(0)?;
        let execution = execution
            .parse::<u64>()
            .map_err(|e| StoreError::Corrupt(format!("execution id {execution:?} of attempt {attempt}: {e}")))?;
        Ok(Some((ExecutionId(execution), row.try_get(1)?)))
    }

    /// Records that a user wants the job cancelled. False: no such job.
    pub async fn request_cancel(&self, job_id: &JobId) -> Result<bool, StoreError> {
        let mut transaction = self.write().await?;
        let result = sqlx::query("UPDATE jobs SET desired_status = $1 WHERE job_id = $2")
            .bind(DesiredStatus::Canceled.as_str())
            .bind(job_id.0.clone())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(result.rows_affected() > 0)
    }

    /// What a user asked for, if anything.
    pub async fn desired_status(&self, job_id: &JobId) -> Result<Option<DesiredStatus>, StoreError> {
        let row = sqlx::query("SELECT desired_status FROM jobs WHERE job_id = $1")
            .bind(job_id.0.clone())
            .fetch_optional(&self.pool)
            .await?;
        let text = row.and_then(|row| row.try_get::<Option<String>, _>(0).ok().flatten());
        Ok(text.as_deref().and_then(desired_status))
    }

    /// Keeps the last metrics of every task once the job has ended.
    pub async fn save_final_metrics(&self, job_id: &JobId, metrics_json: &str) -> Result<(), StoreError> {
        let mut transaction = self.write().await?;
        sqlx::query("UPDATE jobs SET final_metrics_json = $1 WHERE job_id = $2")
            .bind(metrics_json.to_string())
            .bind(job_id.0.clone())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// How many jobs have each stored status text.
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetch_all(&self.pool).await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// Every job whose stored status is not terminal (including unknown text), with that text.
    pub async fn unfinished_jobs(&self) -> Result<Vec<(JobId, String)>, StoreError> {
        let sql = format!(
            "SELECT job_id, status FROM jobs WHERE status NOT IN ({})",
            sql_list(JobStatus::terminal(), JobStatus::as_str)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.iter().map(|row| Ok((JobId(row.try_get(0)?), row.try_get(1)?))).collect()
    }

    /// Runs `sql` as is: tests break and mend the schema with it to make queries fail for a while.
    #[cfg(test)]
    pub(crate) async fn execute_for_tests(&self, sql: &'static str) -> Result<(), StoreError> {
        self.pool.execute(sqlx::raw_sql(sql)).await?;
        Ok(())
    }

    /// Closes the pool, waiting for queries in flight.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A stored wish; text that names none (written by a newer build, say) is logged and read as no wish, so
/// the job goes on as it is rather than failing.
fn desired_status(text: &str) -> Option<DesiredStatus> {
    match text.parse() {
        Ok(desired) => Some(desired),
        Err(unknown) => {
            tracing::warn!(%unknown, "ignoring a desired status this build does not know");
            None
        }
    }
}

fn job_record(row: &AnyRow) -> Result<JobRecord, StoreError> {
    let status: String = row.try_get("status")?;
    let attempt: i64 = row.try_get("attempt")?;
    let relocations: i64 = row.try_get("relocations")?;
    Ok(JobRecord {
        job_id: JobId(row.try_get("job_id")?),
        name: row.try_get("name")?,
        graph_json: row.try_get("graph_json")?,
        chains_json: row.try_get("chains_json")?,
        status: status.parse(),
        desired_status: row.try_get::<Option<String>, _>("desired_status")?.as_deref().and_then(desired_status),
        attempt: Attempt(u32::try_from(attempt).unwrap_or(0)),
        relocations: u32::try_from(relocations).unwrap_or(0),
        start_time_ms: from_ms(row.try_get("start_time_ms")?),
        end_time_ms: row.try_get::<Option<i64>, _>("end_time_ms")?.map(from_ms),
        failure_cause: row.try_get("failure_cause")?,
        final_metrics_json: row.try_get("final_metrics_json")?,
        submitted_restore_json: row.try_get("submitted_restore_json")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::lifecycle::{CheckpointKind, CheckpointStatus};

    /// What a test's store lives in; kept alive for the test.
    enum Database {
        Sqlite(#[allow(dead_code)] tempfile::TempDir),
        Postgres,
    }

    async fn sqlite_store() -> (Database, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let url = format!("sqlite://{}", dir.path().join("nested-test.db").display());
        let store = Store::open(&url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
        assert_eq!(store.backend_name().await.ok().as_deref(), Some("SQLite"));
        (Database::Sqlite(dir), store)
    }

    /// A store in a new database of the PostgreSQL server at `SLUICE_TEST_POSTGRES_URL` (which
    /// `scripts/test.sh` starts).
    async fn postgres_store() -> (Database, Store) {
        let admin_url = std::env::var("SLUICE_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            panic!("SLUICE_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
        });
        sqlx::any::install_default_drivers();
        let name = format!("sluice_store_{}", uuid::Uuid::new_v4().simple());
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {admin_url}: {e}"));
        let create = format!("CREATE DATABASE {name}");
        admin.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(create))).await.unwrap_or_else(|e| panic!("{e}"));
        let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
        let url = format!("{base}/{name}");
        let store = Store::open(&url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
        assert_eq!(store.backend_name().await.ok().as_deref(), Some("PostgreSQL"));
        (Database::Postgres, store)
    }

    /// Runs the check on both backends: the same queries must mean the same on each.
    macro_rules! on_both_backends {
        ($check:ident) => {
            mod $check {
                use super::*;

                #[tokio::test]
                async fn sqlite() {
                    let (_database, store) = sqlite_store().await;
                    super::$check(store).await;
                }

                #[tokio::test]
                async fn postgres() {
                    let (_database, store) = postgres_store().await;
                    super::$check(store).await;
                }
            }
        };
    }

    on_both_backends!(a_job_round_trips_through_the_store);
    on_both_backends!(status_updates_attempts_and_cancel_requests_are_recorded);
    on_both_backends!(unknown_stored_status_text_is_carried_not_fatal);
    on_both_backends!(jobs_are_listed_newest_first);
    on_both_backends!(checkpoints_are_recorded_once_and_counted);
    on_both_backends!(checkpoint_history_beyond_the_newest_rows_is_deleted_and_retained_rows_are_kept);
    on_both_backends!(finished_jobs_older_than_the_retention_age_are_deleted_with_their_rows);
    on_both_backends!(the_lease_is_taken_once_renewed_by_its_holder_only_and_released);
    on_both_backends!(exceptions_are_replaced_per_attempt_listed_newest_first_and_bounded);

    /// Goal: the exception history (issue 22). Method: attempt 1 recorded, then replaced with its recovery;
    /// attempt 2 recorded; read back newest first; then more than the bound, of which only the newest stay.
    async fn exceptions_are_replaced_per_attempt_listed_newest_first_and_bounded(store: Store) {
        let id = JobId("a".into());
        assert!(store.insert_job(&new_job("a", 10)).await.is_ok());
        let failure = |attempt: u32| ExceptionRecord {
            attempt,
            time_ms: 100 + u64::from(attempt),
            cause: format!("cause {attempt}"),
            // Both with and without a kind (rows of failures no task reported).
            failure_kind: attempt.is_multiple_of(2).then_some(sluice_common::lifecycle::FailureKind::Configuration),
            task: Some("gen (chain 0, subtask 1)".into()),
            task_manager_id: None,
            restarted: false,
            recovery: None,
        };
        let recovered = ExceptionRecord {
            restarted: true,
            recovery: Some(RecoveryRecord {
                detection_ms: 1,
                restore_ms: 4,
                catch_up_ms: Some(9),
                total_ms: 20,
                ..Default::default()
            }),
            ..failure(1)
        };
        for record in [failure(1), recovered.clone(), failure(2)] {
            store.record_exception(&id, &record).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let listed = store.exceptions(&id).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed, vec![failure(2), recovered]);
        for attempt in 3..=EXCEPTIONS_KEPT_MAX + 5 {
            store.record_exception(&id, &failure(attempt)).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let listed = store.exceptions(&id).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed.len(), EXCEPTIONS_KEPT_MAX as usize);
        assert_eq!(listed.first().map(|e| e.attempt), Some(EXCEPTIONS_KEPT_MAX + 5));
        assert_eq!(listed.last().map(|e| e.attempt), Some(6));
    }

    /// Goal: the lease (issue 21). Method: A takes it (epoch 1); B cannot while it is held; A renews; B cannot
    /// renew A's; A releases; B takes it at once (epoch 2); A's renewal now fails; A restarted on the same data
    /// directory (same holder id) takes it back without waiting (epoch 3).
    async fn the_lease_is_taken_once_renewed_by_its_holder_only_and_released(store: Store) {
        let long = 60_000;
        assert_eq!(store.acquire_lease("a", "ra", "pa", long).await.ok(), Some(Some(1)));
        assert_eq!(store.acquire_lease("b", "rb", "pb", long).await.ok(), Some(None), "held by a");
        assert_eq!(store.renew_lease("a", 1, long).await.ok(), Some(true));
        assert_eq!(store.renew_lease("b", 1, long).await.ok(), Some(false), "b does not hold it");
        let lease = store.lease().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((lease.epoch, lease.holder.as_str(), lease.rpc_address.as_str()), (1, "a", "pa"));
        assert!(lease.is_held() && lease.expires_ms > lease.now_ms, "{lease:?}");
        store.release_lease("a", 1).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!store.lease().await.is_ok_and(|l| l.is_held()), "released");
        assert_eq!(store.acquire_lease("b", "rb", "pb", long).await.ok(), Some(Some(2)));
        assert_eq!(store.renew_lease("a", 1, long).await.ok(), Some(false), "a lost it");
        assert_eq!(store.acquire_lease("b", "rb", "pb", long).await.ok(), Some(Some(3)), "its own holder retakes it");
        // An expired lease is taken by anyone.
        assert_eq!(store.renew_lease("b", 3, 0).await.ok(), Some(true));
        let expired = async {
            loop {
                if let Ok(Some(epoch)) = store.acquire_lease("c", "rc", "pc", long).await {
                    return epoch;
                }
                tokio::task::yield_now().await;
            }
        };
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), expired).await.ok(), Some(4));
    }

    /// Goal: fencing (issue 21): a write of a JobManager whose epoch is no longer the lease's changes nothing
    /// and says so, and tells the fence it was deposed. Method: two stores on one PostgreSQL database, each
    /// with its own fence, play the old and the new leader.
    #[tokio::test]
    async fn a_deposed_leaders_writes_are_refused_and_change_nothing() {
        let (_database, plain) = postgres_store().await;
        let old_fence = std::sync::Arc::new(Fence::default());
        let new_fence = std::sync::Arc::new(Fence::default());
        let old = plain.clone().fenced(old_fence.clone());
        let new = plain.clone().fenced(new_fence.clone());
        let first = plain.acquire_lease("old", "", "", 60_000).await.ok().flatten();
        assert_eq!(first, Some(1));
        old_fence.set(1);
        assert!(old.insert_job(&new_job("a", 1)).await.is_ok(), "the leader writes");
        // The old leader stalls; its lease expires and the new one takes it.
        assert_eq!(plain.renew_lease("old", 1, 0).await.ok(), Some(true));
        let taken = async {
            loop {
                if let Ok(Some(epoch)) = plain.acquire_lease("new", "", "", 60_000).await {
                    return epoch;
                }
                tokio::task::yield_now().await;
            }
        };
        let taken = tokio::time::timeout(Duration::from_secs(10), taken).await.unwrap_or_else(|_| panic!("not taken"));
        assert_eq!(taken, 2);
        new_fence.set(taken);
        let deposed = old_fence.subscribe_deposed();
        let running = StatusUpdate { status: JobStatus::Running, at_ms: 5, end_time_ms: None, failure_cause: None };
        let refused = old.update_status(&JobId("a".into()), &running).await;
        assert!(matches!(refused, Err(StoreError::Fenced { held: 1, current: 2 })), "{refused:?}");
        assert!(matches!(
            old.insert_checkpoint(&JobId("a".into()), 1, 1, CheckpointKind::Checkpoint, 1, "/x").await,
            Err(StoreError::Fenced { .. })
        ));
        assert!(deposed.has_changed().unwrap_or(false), "the fence heard it was deposed");
        let record = new.job(&JobId("a".into())).await.ok().flatten().map(|r| r.status);
        assert_eq!(record, Some(Ok(JobStatus::Created)), "the old leader's write changed nothing");
        assert_eq!(new.max_checkpoint_id(&JobId("a".into())).await.ok(), Some(0));
        assert!(new.update_status(&JobId("a".into()), &running).await.is_ok(), "the new leader writes");
        // A JobManager that does not lead (epoch 0) writes nothing either.
        new_fence.set(0);
        assert!(matches!(new.request_cancel(&JobId("a".into())).await, Err(StoreError::Fenced { held: 0, .. })));
    }

    /// Goal: rule 1 of `store::retention` (issue 19). Method: 10 checkpoints of one job: 1-6 failed, 7-8
    /// completed and discarded, 9 completed and retained, 10 in progress; keep 3 history rows.
    async fn checkpoint_history_beyond_the_newest_rows_is_deleted_and_retained_rows_are_kept(store: Store) {
        let job = new_job("history", 1);
        store.insert_job(&job).await.unwrap_or_else(|e| panic!("{e}"));
        let id = &job.job_id;
        for n in 1..=10 {
            let location = format!("/checkpoints/history/chk-{n}");
            store
                .insert_checkpoint(id, n, 1, CheckpointKind::Checkpoint, n, &location)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let done = CompletedCheckpoint { end_ms: n, location, ..Default::default() };
            match n {
                1..=6 => store.fail_checkpoint(id, n, n, "declined").await.unwrap_or_else(|e| panic!("{e}")),
                7..=9 => assert_eq!(store.complete_checkpoint(id, n, &done).await.ok(), Some(true)),
                _ => {}
            }
            if (7..=8).contains(&n) {
                store.discard_checkpoint(id, n).await.unwrap_or_else(|e| panic!("{e}"));
            }
        }
        // Another job's history is counted apart.
        let other = new_job("other", 2);
        store.insert_job(&other).await.unwrap_or_else(|e| panic!("{e}"));
        store
            .insert_checkpoint(&other.job_id, 1, 1, CheckpointKind::Checkpoint, 1, "/o")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.fail_checkpoint(&other.job_id, 1, 1, "declined").await.unwrap_or_else(|e| panic!("{e}"));

        // A batch of 2 deletes 2 of the 5 rows due; the next pass the rest; then nothing.
        assert_eq!(store.delete_checkpoint_history(3, 2).await.ok(), Some(2));
        assert_eq!(store.delete_checkpoint_history(3, 100).await.ok(), Some(3));
        assert_eq!(store.delete_checkpoint_history(3, 100).await.ok(), Some(0));
        let ids: Vec<u64> = store.checkpoints(id, 100).await.unwrap_or_default().iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![10, 9, 8, 7, 6], "3 history rows (8, 7, 6), the retained 9 and the in-progress 10");
        assert_eq!(store.max_checkpoint_id(id).await.ok(), Some(10));
        assert_eq!(store.checkpoints(&other.job_id, 100).await.map(|c| c.len()).ok(), Some(1));
    }

    /// Goal: rule 2 of `store::retention` (issue 19). Method: a job that ended at 1000 ms with an attempt and
    /// a checkpoint, one that ended at 5000 ms, one still running; delete what ended before 2000 ms.
    async fn finished_jobs_older_than_the_retention_age_are_deleted_with_their_rows(store: Store) {
        let end = |id: &str, at: u64| {
            let store = store.clone();
            let id = JobId(id.into());
            async move {
                let update =
                    StatusUpdate { status: JobStatus::Finished, at_ms: at, end_time_ms: Some(at), failure_cause: None };
                store.update_status(&id, &update).await.unwrap_or_else(|e| panic!("{e}"));
            }
        };
        for name in ["old", "recent", "running"] {
            store.insert_job(&new_job(name, 1)).await.unwrap_or_else(|e| panic!("{e}"));
            let id = JobId(name.into());
            store
                .record_attempt(&id, Attempt(1), ExecutionId(7), "[]", 2, false)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            store
                .insert_checkpoint(&id, 1, 1, CheckpointKind::Checkpoint, 3, "/c")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        end("old", 1000).await;
        end("recent", 5000).await;
        let running = StatusUpdate { status: JobStatus::Running, at_ms: 4, end_time_ms: None, failure_cause: None };
        store.update_status(&JobId("running".into()), &running).await.unwrap_or_else(|e| panic!("{e}"));

        let policy = RetentionPolicy { checkpoint_history_rows: 100, finished_job_age: Some(Duration::from_secs(3)) };
        let pass = store.apply_retention(&policy, 5000).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pass, RetentionPass { checkpoint_rows: 0, jobs: 1 });
        assert!(store.job(&JobId("old".into())).await.ok().flatten().is_none(), "the old job is gone");
        assert_eq!(store.checkpoints(&JobId("old".into()), 10).await.map(|c| c.len()).ok(), Some(0));
        let attempts =
            sqlx::query("SELECT COUNT(*) FROM job_attempts WHERE job_id = 'old'").fetch_one(&store.pool).await;
        assert_eq!(attempts.ok().and_then(|r| r.try_get::<i64, _>(0).ok()), Some(0));
        for kept in ["recent", "running"] {
            assert!(store.job(&JobId(kept.into())).await.ok().flatten().is_some(), "{kept} is kept");
            assert_eq!(store.checkpoints(&JobId(kept.into()), 10).await.map(|c| c.len()).ok(), Some(1));
        }
        let forever = RetentionPolicy { finished_job_age: None, ..policy };
        assert_eq!(store.apply_retention(&forever, u64::MAX).await.ok(), Some(RetentionPass::default()));
        assert!(store.job(&JobId("recent".into())).await.ok().flatten().is_some(), "0 keeps finished jobs");
    }

    async fn checkpoints_are_recorded_once_and_counted(store: Store) {
        let job = new_job("cp", 1);
        store.insert_job(&job).await.unwrap_or_else(|e| panic!("{e}"));
        let id = &job.job_id;
        assert_eq!(store.max_checkpoint_id(id).await.ok(), Some(0));
        for n in 1..=3 {
            let location = format!("/checkpoints/cp/chk-{n}");
            store
                .insert_checkpoint(id, n, 1, CheckpointKind::Checkpoint, 100 * n, &location)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let done = CompletedCheckpoint {
            end_ms: 150,
            location: "/checkpoints/cp/chk-1".into(),
            state_size_bytes: 4096,
            alignment_ms: 3,
            sync_ms: 1,
            async_ms: 20,
            tasks_json: "[]".into(),
        };
        assert_eq!(store.complete_checkpoint(id, 1, &done).await.ok(), Some(true));
        // Completing twice is a no-op that answers "completed" (a retry whose first try landed); completing
        // it elsewhere, failing it after, or completing a failed one, changes nothing.
        assert_eq!(store.complete_checkpoint(id, 1, &done).await.ok(), Some(true));
        let elsewhere = CompletedCheckpoint { location: "/elsewhere".into(), ..done.clone() };
        assert_eq!(store.complete_checkpoint(id, 1, &elsewhere).await.ok(), Some(false));
        store.fail_checkpoint(id, 1, 170, "too late").await.unwrap_or_else(|e| panic!("{e}"));
        let first = store.checkpoint(id, 1).await.ok().flatten().map(|c| (c.status, c.location));
        assert_eq!(first, Some((CheckpointStatus::Completed, "/checkpoints/cp/chk-1".to_string())));
        store.fail_checkpoint(id, 2, 260, "declined by count#0").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.complete_checkpoint(id, 2, &done).await.ok(), Some(false));
        store.discard_checkpoint(id, 1).await.unwrap_or_else(|e| panic!("{e}"));

        let listed = store.checkpoints(id, 10).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed.iter().map(|c| c.id).collect::<Vec<_>>(), vec![3, 2, 1]);
        let (third, second, first) = (&listed[0], &listed[1], &listed[2]);
        assert_eq!((third.status.as_str(), third.end_ms), ("IN_PROGRESS", None));
        assert_eq!(second.status, CheckpointStatus::Failed);
        assert_eq!(second.failure.as_deref(), Some("declined by count#0"));
        assert_eq!((first.status.as_str(), first.state_size_bytes, first.async_ms), ("COMPLETED", 4096, 20));
        assert_eq!(first.duration_ms(), Some(50));
        assert!(first.discarded && second.discarded && !third.discarded);
        assert_eq!(store.max_checkpoint_id(id).await.ok(), Some(3));

        let mut counts = store.checkpoint_counts(id).await.unwrap_or_else(|e| panic!("{e}"));
        counts.sort_by_key(|(status, _)| status.as_str());
        let expected: Vec<(CheckpointStatus, u64)> =
            vec![(CheckpointStatus::Completed, 1), (CheckpointStatus::Failed, 1), (CheckpointStatus::InProgress, 1)];
        assert_eq!(counts, expected);
        assert_eq!(store.fail_in_progress_checkpoints(400, "JobManager restarted").await.ok(), Some(1));
        assert_eq!(
            store.checkpoints(id, 1).await.ok().and_then(|c| c.first().map(|c| c.status)),
            Some(CheckpointStatus::Failed)
        );
    }

    fn new_job(id: &str, start: u64) -> NewJob {
        NewJob {
            job_id: JobId(id.into()),
            name: format!("job {id}"),
            graph_json: "{\"name\":\"g\"}".into(),
            chains_json: "[]".into(),
            start_time_ms: start,
            submitted_restore_json: None,
        }
    }

    async fn a_job_round_trips_through_the_store(store: Store) {
        assert!(store.insert_job(&new_job("a", 10)).await.is_ok());
        let record = store.job(&JobId("a".into())).await.ok().flatten();
        let Some(record) = record else { panic!("job a not found") };
        assert_eq!(record.name, "job a");
        assert_eq!(record.graph_json, "{\"name\":\"g\"}");
        assert_eq!(record.status, Ok(JobStatus::Created));
        assert_eq!(record.attempt, Attempt(0));
        assert_eq!(record.start_time_ms, 10);
        assert_eq!(record.end_time_ms, None);
        assert!(store.job(&JobId("missing".into())).await.ok().flatten().is_none());
    }

    async fn status_updates_attempts_and_cancel_requests_are_recorded(store: Store) {
        let id = JobId("a".into());
        assert!(store.insert_job(&new_job("a", 10)).await.is_ok());
        assert!(store.record_attempt(&id, Attempt(1), ExecutionId(u64::MAX), "[]", 11, false).await.is_ok());
        assert!(store.record_attempt(&id, Attempt(2), ExecutionId(3), "[]", 12, true).await.is_ok());
        let running = StatusUpdate { status: JobStatus::Running, at_ms: 12, end_time_ms: None, failure_cause: None };
        assert!(store.update_status(&id, &running).await.is_ok());
        assert_eq!(store.unfinished_jobs().await.ok(), Some(vec![(id.clone(), "RUNNING".to_string())]));
        assert_eq!(store.request_cancel(&id).await.ok(), Some(true));
        assert_eq!(store.request_cancel(&JobId("missing".into())).await.ok(), Some(false));
        assert_eq!(store.desired_status(&id).await.ok().flatten(), Some(DesiredStatus::Canceled));

        let failed = StatusUpdate {
            status: JobStatus::Failed,
            at_ms: 20,
            end_time_ms: Some(20),
            failure_cause: Some("boom".into()),
        };
        assert!(store.update_status(&id, &failed).await.is_ok());
        let record = store.job(&id).await.ok().flatten();
        let Some(record) = record else { panic!("job a not found") };
        assert_eq!(record.status, Ok(JobStatus::Failed));
        assert_eq!((record.attempt, record.relocations), (Attempt(2), 1), "the second attempt was a move");
        assert_eq!(record.end_time_ms, Some(20));
        assert_eq!(record.failure_cause.as_deref(), Some("boom"));
        assert_eq!(store.unfinished_jobs().await.ok(), Some(vec![]));
        assert_eq!(store.count_by_status().await.ok(), Some(vec![("FAILED".to_string(), 1)]));
    }

    async fn unknown_stored_status_text_is_carried_not_fatal(store: Store) {
        assert!(store.insert_job(&new_job("a", 10)).await.is_ok());
        let corrupt = sqlx::query("UPDATE jobs SET status = 'EXPLODED'").execute(&store.pool).await;
        assert!(corrupt.is_ok());
        let record = store.job(&JobId("a".into())).await.ok().flatten();
        assert_eq!(record.map(|r| r.status), Some(Err(UnknownJobStatus("EXPLODED".into()))));
        assert_eq!(store.unfinished_jobs().await.ok().map(|j| j.len()), Some(1));
    }

    async fn jobs_are_listed_newest_first(store: Store) {
        for (id, start) in [("old", 1), ("new", 3), ("mid", 2)] {
            assert!(store.insert_job(&new_job(id, start)).await.is_ok());
        }
        let ids: Vec<String> = store.jobs().await.unwrap_or_default().into_iter().map(|r| r.job_id.0).collect();
        assert_eq!(ids, vec!["new", "mid", "old"]);
    }
}
