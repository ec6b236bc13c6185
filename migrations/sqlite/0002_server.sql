-- The server: queue leases, parked runs, soft-deleted workflows, API tokens,
-- webhook secrets and deliveries, schedules. Same conventions as 0001_init.sql.

-- Queue leases. A worker claims a queued run by setting status = 'running',
-- lease_owner = its id and lease_until = now + lease; it extends the lease
-- while it works. A running run whose lease expired goes back to 'queued'.
-- Runs executed without a lease (the local `omniflow run`) keep both NULL.
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until TEXT;
-- A queued run is not claimed before wake_at (NULL: at once). For parked
-- runs (retry waits, the `delay` piece) and delayed triggers.
ALTER TABLE runs ADD COLUMN wake_at TEXT;
CREATE INDEX runs_status_lease ON runs (status, lease_until);

-- DELETE /workflows/{name} hides a workflow (runs keep their pinned version);
-- saving it again brings it back.
ALTER TABLE workflows ADD COLUMN deleted_at TEXT;

-- Bearer tokens for the API. Only the SHA-256 (hex) of a token is stored.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

-- One webhook secret per workflow (HMAC key for X-OmniFlow-Signature).
CREATE TABLE webhooks (
    workflow_name TEXT PRIMARY KEY NOT NULL REFERENCES workflows (name) ON DELETE CASCADE,
    secret        TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

-- Signatures already accepted, for replay protection inside the
-- timestamp window (older rows are pruned).
CREATE TABLE webhook_deliveries (
    signature     TEXT PRIMARY KEY NOT NULL,
    workflow_name TEXT NOT NULL,
    received_at   TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);

-- Cron triggers: the next fire time is stored so exactly one run is created
-- per fire time (advanced with compare-and-set in the run's transaction).
CREATE TABLE schedules (
    workflow_name TEXT PRIMARY KEY NOT NULL REFERENCES workflows (name) ON DELETE CASCADE,
    cron          TEXT NOT NULL,
    timezone      TEXT NOT NULL,
    missed        TEXT NOT NULL CHECK (missed IN ('run_once', 'skip')),
    next_fire_at  TEXT NOT NULL,
    last_fired_at TEXT
);
