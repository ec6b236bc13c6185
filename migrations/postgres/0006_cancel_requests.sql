-- Cancelling a run that another process executes (see
-- migrations/sqlite/0006_cancel_requests.sql): the API sets
-- cancel_requested and notifies `omniflow_cancel` with the run id.
ALTER TABLE runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;

-- Wake-ups across processes (LISTEN/NOTIFY): every process sharing the
-- database listens on these channels; a slow poll is the fallback.
--   omniflow_queue  (no payload): a run became claimable (created, re-queued,
--                   released, retried; not a run parked until later).
--   omniflow_run    (run id): a run reached a terminal status (waiters and
--                   event streams in other processes re-read it).
-- PostgreSQL folds identical notifications of one transaction into one, so
-- queueing 10 000 runs in one statement sends one `omniflow_queue`.
CREATE FUNCTION omniflow_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('omniflow_queue', '');
    RETURN NULL;
END
$$;

CREATE FUNCTION omniflow_notify_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('omniflow_run', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_notify_queued_insert AFTER INSERT ON runs FOR EACH ROW
    WHEN (NEW.status = 'queued' AND NEW.wake_at IS NULL)
    EXECUTE FUNCTION omniflow_notify_queued();
CREATE TRIGGER runs_notify_queued_update AFTER UPDATE OF status ON runs FOR EACH ROW
    WHEN (NEW.status = 'queued' AND (NEW.wake_at IS NULL OR NEW.wake_at <= now()))
    EXECUTE FUNCTION omniflow_notify_queued();
CREATE TRIGGER runs_notify_finished AFTER UPDATE OF status ON runs FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION omniflow_notify_finished();
