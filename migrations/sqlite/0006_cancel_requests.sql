-- Cancelling a run that another process executes: the API sets
-- cancel_requested, and the process holding the run's lease sees it (its
-- heartbeat reads it; on PostgreSQL a NOTIFY tells it at once) and
-- interrupts the run, which ends `cancelled` through the usual path.
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
