-- Cancelling a run that another process executes (see
-- migrations/sqlite/0006_cancel_requests.sql): the API sets
-- cancel_requested and notifies `omniflow_cancel` with the run id.
--
-- Wake-ups across processes (LISTEN/NOTIFY) need no schema: the store
-- sends `omniflow_queue` (a run became claimable), `omniflow_run` (a run
-- reached a terminal status; payload: its id) and `omniflow_cancel` in a
-- notify-only transaction after the change committed (store/postgres/listen.rs
-- says why not from a trigger inside the change's transaction).
ALTER TABLE runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
