-- See ../sqlite/0004_waits.sql.
ALTER TABLE step_runs ADD COLUMN wake_at TIMESTAMPTZ;
ALTER TABLE step_runs ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_status_wake ON runs (status, wake_at);
