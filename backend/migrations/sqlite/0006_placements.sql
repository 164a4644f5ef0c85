-- Where each service's instances run, one row per instance ("slot"): the
-- deploy places them on live nodes that can serve the service's resource
-- group, a node runs the slots placed on it, and the slots of a node that
-- stopped heartbeating are placed again on live nodes. Replaces `hosts`,
-- which only recorded what a node happened to run.
DROP TABLE hosts;
CREATE TABLE placements (
    service  TEXT NOT NULL,
    slot     INTEGER NOT NULL,
    node     TEXT NOT NULL,
    -- The artifact the slot runs: a node reloads when it changes.
    artifact TEXT NOT NULL,
    -- pending (placed, not yet started), running, failed (see error)
    state    TEXT NOT NULL DEFAULT 'pending',
    error    TEXT,
    PRIMARY KEY (service, slot)
);
CREATE INDEX placements_node ON placements (node);
-- The job kinds (resource groups) a node can serve, comma-separated:
-- a GPU group is placed only on nodes that have its GPUs.
ALTER TABLE nodes ADD COLUMN kinds TEXT NOT NULL DEFAULT 'cpu';
