-- OmniFlow durable store, SQLite flavour (the embedded default).
--
-- Conventions (shared with migrations/postgres/):
-- * ids are UUID text (v7, so they sort by creation time);
-- * timestamps are RFC 3339 UTC text with milliseconds
--   ("2026-11-23T19:30:07.123Z"), so they sort lexically;
-- * JSON columns hold JSON text, queryable with json_extract();
-- * statuses are lowercase text, priorities integers (higher = sooner).

CREATE TABLE workflows (
    name       TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE workflow_versions (
    workflow_name TEXT NOT NULL REFERENCES workflows (name) ON DELETE CASCADE,
    version       INTEGER NOT NULL CHECK (version >= 1),
    definition    TEXT NOT NULL,  -- JSON
    created_at    TEXT NOT NULL,
    PRIMARY KEY (workflow_name, version)
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY NOT NULL,
    workflow_name    TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    status           TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 3),
    trigger          TEXT NOT NULL,  -- JSON: {"type": "manual", "payload": ...}
    vars             TEXT NOT NULL,  -- JSON
    simulated        INTEGER NOT NULL DEFAULT 0 CHECK (simulated IN (0, 1)),
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    total_time_ms    INTEGER,
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
    run_id        TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id       TEXT NOT NULL,
    status        TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'waiting', 'succeeded', 'failed', 'skipped', 'cancelled')),
    input         TEXT,  -- JSON
    output        TEXT,  -- JSON
    error_class   TEXT,
    error_message TEXT,
    logs          TEXT NOT NULL DEFAULT '',
    attempts      INTEGER NOT NULL DEFAULT 0,
    fuel_used     INTEGER NOT NULL DEFAULT 0,
    duration_ms   INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT,
    finished_at   TEXT,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE attempts (
    run_id        TEXT NOT NULL,
    step_id       TEXT NOT NULL,
    attempt       INTEGER NOT NULL CHECK (attempt >= 1),
    status        TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'waiting', 'succeeded', 'failed', 'skipped', 'cancelled')),
    input         TEXT,  -- JSON
    output        TEXT,  -- JSON
    error_class   TEXT,
    error_message TEXT,
    logs          TEXT NOT NULL DEFAULT '',
    fuel_used     INTEGER NOT NULL DEFAULT 0,
    duration_ms   INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id, attempt),
    FOREIGN KEY (run_id, step_id) REFERENCES step_runs (run_id, step_id) ON DELETE CASCADE
);
