-- Waits that do not hold a worker: a step in status 'waiting' (a retry
-- delay, or a piece's `$wait_until` such as the delay piece's) records when
-- it continues; its run is parked as 'queued' with runs.wake_at, claimed by
-- any worker after that time.
--
-- tries: attempts made in the current retry budget (max_attempts). It goes
-- back to 0 when a failed run is retried by hand; `attempts` keeps counting.
ALTER TABLE step_runs ADD COLUMN wake_at TEXT;
ALTER TABLE step_runs ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_status_wake ON runs (status, wake_at);
