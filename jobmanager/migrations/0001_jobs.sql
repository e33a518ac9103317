-- Jobs and their attempts. Portable SQL (SQLite and PostgreSQL): TEXT and BIGINT only, times in ms since
-- the Unix epoch. A job's status is the text of JobStatus (CREATED, RUNNING, ...).
CREATE TABLE jobs (
    job_id              TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    -- The validated, normalized job graph (proto3 JSON) and its chains, exactly as deployed.
    graph_json          TEXT NOT NULL,
    chains_json         TEXT NOT NULL,
    status              TEXT NOT NULL,
    -- What a user asked for (CANCELED), or NULL. Written by REST, read by the job's actor.
    desired_status      TEXT,
    attempt             BIGINT NOT NULL DEFAULT 0,
    start_time_ms       BIGINT NOT NULL,
    end_time_ms         BIGINT,
    status_changed_ms   BIGINT NOT NULL,
    failure_cause       TEXT,
    -- The last metrics of every task (JSON), written when the job ends.
    final_metrics_json  TEXT
);

CREATE INDEX jobs_by_status ON jobs (status);

CREATE TABLE job_attempts (
    job_id          TEXT NOT NULL REFERENCES jobs (job_id),
    attempt         BIGINT NOT NULL,
    -- u64 as decimal text: SQL has no unsigned 64-bit integer.
    execution_id    TEXT NOT NULL,
    placements_json TEXT NOT NULL,
    deployed_ms     BIGINT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
