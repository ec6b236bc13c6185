-- Installed pieces, durable (issue: pieces as a product).
--
-- piece_blobs holds each component's bytes once, by sha256 digest (hex);
-- pieces is one row per name@version pointing at its bytes, with what the
-- loader read from it (info: description, actions and their schemas;
-- capabilities: the HTTP destinations and secrets it asks for). Built-in
-- pieces are registered here too (builtin = 1) when a workflow pins them.
-- A workflow version pins, for each `name@req` it uses, the exact version
-- and digest it was saved with (workflow_versions.pins, JSON; NULL for
-- versions saved before pinning): its runs always load those bytes.
CREATE TABLE piece_blobs (
    digest TEXT PRIMARY KEY NOT NULL,   -- sha256, lowercase hex
    size   INTEGER NOT NULL,
    bytes  BLOB NOT NULL
);

CREATE TABLE pieces (
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    digest       TEXT NOT NULL REFERENCES piece_blobs (digest),
    size         INTEGER NOT NULL,
    info         TEXT NOT NULL,      -- JSON
    capabilities TEXT NOT NULL,      -- JSON: {"http": [...], "secrets": [...]}
    builtin      INTEGER NOT NULL DEFAULT 0,
    installed_at TEXT NOT NULL,
    installed_by INTEGER,            -- api_tokens.id, NULL from the CLI
    replaced_at  TEXT,               -- set when ?replace=true put other bytes here
    PRIMARY KEY (name, version)
);

ALTER TABLE workflow_versions ADD COLUMN pins TEXT;  -- JSON
