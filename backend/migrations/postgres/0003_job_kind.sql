-- The worker pool a deploy job belongs to (as migrations/sqlite/0003_job_kind.sql).
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'cpu';
CREATE INDEX jobs_kind_state ON jobs(kind, state, id);
