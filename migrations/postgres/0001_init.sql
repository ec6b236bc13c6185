-- OmniFlow durable store, PostgreSQL flavour (scale-out): applied by
-- `PgStore::open` (host/src/store/postgres.rs). Same tables, columns,
-- constraints and indexes as migrations/sqlite/, with native types:
-- * ids are UUIDs (v7, so they sort by creation time);
-- * times are TIMESTAMPTZ; the store reads them back as the same RFC 3339
--   UTC text with milliseconds the SQLite flavour stores;
-- * JSON documents are JSONB;
-- * integers are BIGINT (SQLite's INTEGER is 64-bit), booleans BOOLEAN;
-- * statuses are lowercase text, priorities integers (higher = sooner).
-- No column has a default the SQLite flavour lacks: the store writes every
-- value itself.

CREATE TABLE workflows (
    name       TEXT PRIMARY KEY NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE workflow_versions (
    workflow_name TEXT NOT NULL REFERENCES workflows (name) ON DELETE CASCADE,
    version       BIGINT NOT NULL CHECK (version >= 1),
    definition    JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workflow_name, version)
);

CREATE TABLE runs (
    id               UUID PRIMARY KEY NOT NULL,
    workflow_name    TEXT NOT NULL,
    workflow_version BIGINT NOT NULL,
    status           TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         BIGINT NOT NULL CHECK (priority BETWEEN 0 AND 3),
    trigger          JSONB NOT NULL,  -- {"type": "manual", "payload": ...}
    vars             JSONB NOT NULL,
    simulated        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    total_time_ms    BIGINT,
    error            TEXT,
    FOREIGN KEY (workflow_name, workflow_version)
        REFERENCES workflow_versions (workflow_name, version)
);

-- Queue order: by status, then priority (critical first), then FIFO.
CREATE INDEX runs_status_priority_created ON runs (status, priority DESC, created_at);
-- "Runs of workflow X, newest first."
CREATE INDEX runs_workflow_created ON runs (workflow_name, created_at);
-- "Newest runs" without a filter.
CREATE INDEX runs_created ON runs (created_at);

CREATE TABLE step_runs (
    run_id        UUID NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id       TEXT NOT NULL,
    status        TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'waiting', 'succeeded', 'failed', 'skipped', 'cancelled')),
    input         JSONB,
    output        JSONB,
    error_class   TEXT,
    error_message TEXT,
    logs          TEXT NOT NULL DEFAULT '',
    attempts      BIGINT NOT NULL DEFAULT 0,
    fuel_used     BIGINT NOT NULL DEFAULT 0,
    duration_ms   BIGINT NOT NULL DEFAULT 0,
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE attempts (
    run_id        UUID NOT NULL,
    step_id       TEXT NOT NULL,
    attempt       BIGINT NOT NULL CHECK (attempt >= 1),
    status        TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'waiting', 'succeeded', 'failed', 'skipped', 'cancelled')),
    input         JSONB,
    output        JSONB,
    error_class   TEXT,
    error_message TEXT,
    logs          TEXT NOT NULL DEFAULT '',
    fuel_used     BIGINT NOT NULL DEFAULT 0,
    duration_ms   BIGINT NOT NULL DEFAULT 0,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, step_id, attempt),
    FOREIGN KEY (run_id, step_id) REFERENCES step_runs (run_id, step_id) ON DELETE CASCADE
);
