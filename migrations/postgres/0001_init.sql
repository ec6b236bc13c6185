-- OmniFlow durable store, PostgreSQL flavour (scale-out). Not wired yet:
-- `store::open("postgres://...")` returns StoreError::Unsupported until a
-- `PgStore` exists. Same tables and columns as migrations/sqlite/, with native
-- types: UUID ids, TIMESTAMPTZ times, JSONB documents, BIGINT counters.

CREATE TABLE workflows (
    name       TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE workflow_versions (
    workflow_name TEXT NOT NULL REFERENCES workflows (name) ON DELETE CASCADE,
    version       BIGINT NOT NULL CHECK (version >= 1),
    definition    JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_name, version)
);

CREATE TABLE runs (
    id               UUID PRIMARY KEY,
    workflow_name    TEXT NOT NULL,
    workflow_version BIGINT NOT NULL,
    status           TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         SMALLINT NOT NULL CHECK (priority BETWEEN 0 AND 3),
    trigger          JSONB NOT NULL,
    vars             JSONB NOT NULL,
    simulated        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    total_time_ms    BIGINT,
    error            TEXT,
    FOREIGN KEY (workflow_name, workflow_version)
        REFERENCES workflow_versions (workflow_name, version)
);

CREATE INDEX runs_status_priority_created ON runs (status, priority DESC, created_at);
CREATE INDEX runs_workflow_created ON runs (workflow_name, created_at);
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
    attempts      INTEGER NOT NULL DEFAULT 0,
    fuel_used     BIGINT NOT NULL DEFAULT 0,
    duration_ms   BIGINT NOT NULL DEFAULT 0,
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE attempts (
    run_id        UUID NOT NULL,
    step_id       TEXT NOT NULL,
    attempt       INTEGER NOT NULL CHECK (attempt >= 1),
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
