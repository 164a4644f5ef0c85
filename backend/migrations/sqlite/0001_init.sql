-- Management API tokens. Only the SHA-256 of a token is stored.
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

-- One row per service: its desired config and what is known about it now.
CREATE TABLE services (
    name        TEXT PRIMARY KEY,
    config      TEXT NOT NULL,
    status      TEXT NOT NULL,
    stage       TEXT,
    message     TEXT,
    token       TEXT NOT NULL,
    instances   INTEGER NOT NULL,
    running     INTEGER NOT NULL DEFAULT 0,
    model_dir   TEXT,
    model_file  TEXT,
    model_sha256 TEXT,
    signature   TEXT,
    artifact    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- The durable deploy queue. A job is claimed by flipping queued -> running;
-- jobs still 'running' at start-up were interrupted and are re-queued.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    config      TEXT NOT NULL,
    state       TEXT NOT NULL,
    stage       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT
);
CREATE INDEX jobs_state ON jobs(state, id);

CREATE TABLE logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    job_id      INTEGER,
    ts          TEXT NOT NULL,
    line        TEXT NOT NULL
);
CREATE INDEX logs_service ON logs(service, id);

-- Content-addressed optimized artifacts (see optimizer::artifact::artifact_key).
CREATE TABLE artifacts (
    key          TEXT PRIMARY KEY,
    dir          TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    optimized    INTEGER NOT NULL,
    report       TEXT,
    created_at   TEXT NOT NULL
);
