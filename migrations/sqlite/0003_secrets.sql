-- Secrets stored through the API: encrypted (ChaCha20-Poly1305, key from
-- OMNIFLOW_SECRET_KEY or a key file next to the database). Values are never
-- stored or returned in clear.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    updated_at  TEXT NOT NULL
);
