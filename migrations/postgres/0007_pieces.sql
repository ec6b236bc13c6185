-- Installed pieces, durable (see migrations/sqlite/0007_pieces.sql): bytes
-- once per digest in piece_blobs (every process loads any installed piece
-- from here), one row per name@version in pieces, and the pins of each
-- workflow version.
CREATE TABLE piece_blobs (
    digest TEXT PRIMARY KEY NOT NULL,
    size   BIGINT NOT NULL,
    bytes  BYTEA NOT NULL
);

CREATE TABLE pieces (
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    digest       TEXT NOT NULL REFERENCES piece_blobs (digest),
    size         BIGINT NOT NULL,
    info         JSONB NOT NULL,
    capabilities JSONB NOT NULL,
    builtin      BOOLEAN NOT NULL DEFAULT FALSE,
    installed_at TIMESTAMPTZ NOT NULL,
    installed_by BIGINT,
    replaced_at  TIMESTAMPTZ,
    PRIMARY KEY (name, version)
);

ALTER TABLE workflow_versions ADD COLUMN pins JSONB;
