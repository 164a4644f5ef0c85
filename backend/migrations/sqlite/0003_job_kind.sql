-- The worker pool a deploy job belongs to: 'cpu', or 'gpu:<resource group>'
-- for a GPU deploy. A worker claims only jobs of its kinds, so a GPU job is
-- never run by the CPU pool. Jobs queued before this column existed are CPU jobs
-- (GPU deploys were refused until then).
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'cpu';
CREATE INDEX jobs_kind_state ON jobs(kind, state, id);
