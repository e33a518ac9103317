-- A job's failures, one row per failed attempt, and the recovery that followed (the failure and recovery
-- timeline of the web UI, GET /jobs/{id}/exceptions). Portable SQL, as 0001. Kept: the newest
-- EXCEPTIONS_KEPT_MAX of a job; deleted with the job.
CREATE TABLE job_exceptions (
    job_id          TEXT NOT NULL REFERENCES jobs (job_id),
    -- The attempt that failed.
    attempt         BIGINT NOT NULL,
    -- When the failure was noticed, ms since the epoch.
    time_ms         BIGINT NOT NULL,
    cause           TEXT NOT NULL,
    -- The task that failed ("vertex -> vertex (chain c, subtask s)"), when one did.
    task            TEXT,
    task_manager_id TEXT,
    -- 1 once the job restarted from it.
    restarted       BIGINT NOT NULL DEFAULT 0,
    -- The recovery's phases (JSON), once every task of the next attempt runs.
    recovery_json   TEXT,
    PRIMARY KEY (job_id, attempt)
);
