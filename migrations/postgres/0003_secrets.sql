-- See migrations/sqlite/0003_secrets.sql.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    updated_at  TEXT NOT NULL
);
