-- Step records and attempts are only ever found by their primary key (or a
-- prefix of it). As WITHOUT ROWID tables that key is the table's one
-- b-tree: recording a step changes two pages instead of four (a rowid
-- table keeps its key in a second b-tree), so each step's commit writes
-- half the WAL frames. Same columns, same constraints; rows are copied.
--
-- The old tables are renamed first (SQLite rewrites the foreign key of
-- attempts to follow its parent), the new ones created under the old
-- names, the rows copied, and the old tables dropped child first (so the
-- drop's implicit delete cascades into nothing).
ALTER TABLE attempts RENAME TO attempts_rowid;
ALTER TABLE step_runs RENAME TO step_runs_rowid;

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
    wake_at       TEXT,
    tries         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step_id)
) WITHOUT ROWID;

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
) WITHOUT ROWID;

INSERT INTO step_runs (run_id, step_id, status, input, output, error_class, error_message,
                       logs, attempts, fuel_used, duration_ms, started_at, finished_at,
                       wake_at, tries)
SELECT run_id, step_id, status, input, output, error_class, error_message,
       logs, attempts, fuel_used, duration_ms, started_at, finished_at, wake_at, tries
FROM step_runs_rowid;

INSERT INTO attempts (run_id, step_id, attempt, status, input, output, error_class,
                      error_message, logs, fuel_used, duration_ms, started_at, finished_at)
SELECT run_id, step_id, attempt, status, input, output, error_class,
       error_message, logs, fuel_used, duration_ms, started_at, finished_at
FROM attempts_rowid;

DROP TABLE attempts_rowid;
DROP TABLE step_runs_rowid;
