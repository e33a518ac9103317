-- The kind of a failure a task reported (INPUT, CONFIGURATION, IO, INTERNAL: sluice_common's FailureKind);
-- NULL for failures that were not a task's (a lost TaskManager, a failed checkpoint) and for rows written
-- before kinds existed.
ALTER TABLE job_exceptions ADD COLUMN failure_kind TEXT;
