-- See ../sqlite/0005_lease_epoch.sql (drafted; the PostgreSQL backend is not
-- wired yet). It needs the fencing even more than SQLite: several servers
-- share one database there, and no file lock keeps a second one out.
ALTER TABLE runs ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
