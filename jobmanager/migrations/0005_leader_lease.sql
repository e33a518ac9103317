-- The leader lease of the JobManagers sharing this database (one row, id 1). A JobManager leads while it holds
-- the lease: `holder` is its instance id, `expires_ms` the database-clock time the lease ends unless renewed.
-- `epoch` only grows: each new leader takes the next one, and every metadata write of a leader checks, in its
-- own transaction, that the epoch is still its own (fencing). Times are the database's clock, in ms since the
-- Unix epoch, so the JobManagers' clocks need not agree.
CREATE TABLE leader_lease (
    id            BIGINT PRIMARY KEY,
    epoch         BIGINT NOT NULL,
    holder        TEXT NOT NULL,
    rest_address  TEXT NOT NULL,
    rpc_address   TEXT NOT NULL,
    acquired_ms   BIGINT NOT NULL,
    expires_ms    BIGINT NOT NULL
);
INSERT INTO leader_lease (id, epoch, holder, rest_address, rpc_address, acquired_ms, expires_ms)
    VALUES (1, 0, '', '', '', 0, 0);
