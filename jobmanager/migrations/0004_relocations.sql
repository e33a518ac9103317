-- How many of a job's attempts were moves off a TaskManager that was leaving (a graceful drain), not restarts
-- after a failure: `restarts` is then attempt - 1 - relocations.
ALTER TABLE jobs ADD COLUMN relocations BIGINT NOT NULL DEFAULT 0;
