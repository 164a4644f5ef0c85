-- Nodes sharing one database, and the lease a node holds on the job it runs:
-- it renews `lease_until` (Unix ms) while it works; a job whose lease ran out
-- (its node died) is taken over by another node at its recorded stage.
ALTER TABLE jobs ADD COLUMN node TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    addr         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
