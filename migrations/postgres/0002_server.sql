-- The server: queue leases, parked runs, soft-deleted workflows, API tokens,
-- webhook secrets and deliveries, schedules. Mirrors migrations/sqlite/0002_server.sql
-- with native types. Not wired yet (see 0001_init.sql).

ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until TIMESTAMPTZ;
ALTER TABLE runs ADD COLUMN wake_at TIMESTAMPTZ;
CREATE INDEX runs_status_lease ON runs (status, lease_until);

ALTER TABLE workflows ADD COLUMN deleted_at TIMESTAMPTZ;

CREATE TABLE api_tokens (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);

CREATE TABLE webhooks (
    workflow_name TEXT PRIMARY KEY REFERENCES workflows (name) ON DELETE CASCADE,
    secret        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    signature     TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);

CREATE TABLE schedules (
    workflow_name TEXT PRIMARY KEY REFERENCES workflows (name) ON DELETE CASCADE,
    cron          TEXT NOT NULL,
    timezone      TEXT NOT NULL,
    missed        TEXT NOT NULL CHECK (missed IN ('run_once', 'skip')),
    next_fire_at  TIMESTAMPTZ NOT NULL,
    last_fired_at TIMESTAMPTZ
);
