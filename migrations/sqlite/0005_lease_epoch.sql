-- Fencing between workers (and processes). Every claim of a run increments
-- its lease_epoch; the claimer keeps the value it set. Every write the
-- executing worker makes (step records and attempts, the final status,
-- park, release, lease extension) is conditioned on
-- `status = 'running' AND lease_epoch = <its epoch>`, in the same statement
-- or transaction, so a worker whose lease expired and whose run another
-- worker claimed since cannot overwrite the new worker's records: its
-- writes are refused ("lease lost") and it stops driving the run.
ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
