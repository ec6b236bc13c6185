-- Fencing between workers (see migrations/sqlite/0005_lease_epoch.sql):
-- every claim increments lease_epoch, and every write of the executing
-- worker is conditioned on `status = 'running' AND lease_epoch = <its
-- epoch>` in the same statement or transaction. PostgreSQL needs it even
-- more than SQLite: several processes on several machines share one database.
ALTER TABLE runs ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
