-- Waits that do not hold a worker (see migrations/sqlite/0004_waits.sql):
-- a waiting step records when it continues; tries counts the attempts of
-- the current retry budget.
ALTER TABLE step_runs ADD COLUMN wake_at TIMESTAMPTZ;
ALTER TABLE step_runs ADD COLUMN tries BIGINT NOT NULL DEFAULT 0;
CREATE INDEX runs_status_wake ON runs (status, wake_at);
