-- Versions of a service, numbered as EAS numbers them: every create and
-- modify makes one (the config as accepted, the model it resolved to, who
-- and when), and the artifact it deployed is recorded once it has one, so
-- a rollback serves an earlier version again without optimizing again.
-- services.current_version is the version served (it may be below the
-- latest after a rollback).
CREATE TABLE versions (
    service      TEXT NOT NULL,
    version      INTEGER NOT NULL,
    config       TEXT NOT NULL,
    model_dir    TEXT,
    model_file   TEXT,
    model_sha256 TEXT,
    signature    TEXT,
    artifact     TEXT,
    author       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (service, version)
);
ALTER TABLE services ADD COLUMN current_version INTEGER NOT NULL DEFAULT 1;
-- Services deployed before versions existed: what they serve is version 1.
INSERT INTO versions (service, version, config, model_dir, model_file, model_sha256, signature, artifact, author, created_at)
    SELECT name, 1, config, model_dir, model_file, model_sha256, signature, artifact, 'unknown', created_at
    FROM services;
