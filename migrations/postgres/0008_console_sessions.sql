-- Web console sign-ins: one row per session cookie (its SHA-256 only).
-- A session lives until it expires, is signed out, or its API token is
-- revoked (the check joins api_tokens).
CREATE TABLE console_sessions (
    session_hash TEXT PRIMARY KEY,
    token_id     BIGINT NOT NULL REFERENCES api_tokens(id) ON DELETE CASCADE,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- The queue page charts runs finished per minute; /stats counts them too.
CREATE INDEX runs_finished ON runs (finished_at);
