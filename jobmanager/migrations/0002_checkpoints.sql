-- Checkpoints and savepoints of every job. Portable SQL, as 0001. A row is written IN_PROGRESS when the
-- coordinator triggers, and updated once: COMPLETED (with its statistics) or FAILED (with the reason).
-- `discarded` = 1 once retention (or the end of the job) deleted a completed checkpoint's files.
CREATE TABLE checkpoints (
    job_id            TEXT NOT NULL REFERENCES jobs (job_id),
    checkpoint_id     BIGINT NOT NULL,
    attempt           BIGINT NOT NULL,
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL,
    trigger_ms        BIGINT NOT NULL,
    end_ms            BIGINT,
    location          TEXT NOT NULL,
    state_size_bytes  BIGINT NOT NULL DEFAULT 0,
    -- The largest of any task: the time its inputs were blocked for alignment, its synchronous snapshot,
    -- and its asynchronous write.
    alignment_ms      BIGINT NOT NULL DEFAULT 0,
    sync_ms           BIGINT NOT NULL DEFAULT 0,
    async_ms          BIGINT NOT NULL DEFAULT 0,
    failure           TEXT,
    -- Every task's acknowledgement (state file, size, durations), JSON.
    tasks_json        TEXT,
    discarded         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, checkpoint_id)
);
