-- Whether a team's viewers see its services' secrets (the prediction token,
-- the token in a config, share links). Deployers and admins always do.
ALTER TABLE teams ADD COLUMN viewers_see_secrets BIGINT NOT NULL DEFAULT 0;
