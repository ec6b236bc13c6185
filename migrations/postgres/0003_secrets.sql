-- Secrets stored through the API, encrypted by the caller (see
-- migrations/sqlite/0003_secrets.sql).
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
