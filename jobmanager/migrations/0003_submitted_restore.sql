-- The checkpoint or savepoint a job was submitted to start from (proto3 JSON RestoreSpec), or NULL. A
-- JobManager that takes the job over before its first checkpoint completed starts it from there again, not
-- from the beginning (which would rewind its sources).
ALTER TABLE jobs ADD COLUMN submitted_restore_json TEXT;
