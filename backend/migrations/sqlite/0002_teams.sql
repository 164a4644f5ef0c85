-- Users, teams and roles. Every service belongs to one team; every API token
-- belongs to one user. The first start's admin token belongs to the site
-- admin `admin`, who is admin of the team `default`.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    site_admin  INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);

CREATE TABLE teams (
    name        TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
);

CREATE TABLE memberships (
    team        TEXT NOT NULL REFERENCES teams(name) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'deployer', 'viewer')),
    PRIMARY KEY (team, user_id)
);

INSERT INTO users (name, site_admin, created_at)
    VALUES ('admin', 1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
INSERT INTO teams (name, created_at)
    VALUES ('default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
INSERT INTO memberships (team, user_id, role)
    SELECT 'default', id, 'admin' FROM users WHERE name = 'admin';

ALTER TABLE api_tokens ADD COLUMN user_id INTEGER REFERENCES users(id) ON DELETE CASCADE;
UPDATE api_tokens SET user_id = (SELECT id FROM users WHERE name = 'admin');

ALTER TABLE services ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
CREATE INDEX services_team ON services(team);

-- Read-only links to one deployment. The token is kept in clear so the
-- owner can list and copy links; it grants only the read-only view.
CREATE TABLE share_links (
    token       TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX share_links_service ON share_links(service);
