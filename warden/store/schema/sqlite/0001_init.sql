-- Warden schema 0001: the directory of extensions and the registrar's bindings.

-- One row per extension. Passwords are never stored, only the digest HA1 values
-- (RFC 2617 MD5, RFC 8760 SHA-256) over number:realm:password.
CREATE TABLE extensions (
    number     TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    realm      TEXT NOT NULL,
    ha1_md5    TEXT NOT NULL,
    ha1_sha256 TEXT NOT NULL,
    algorithms TEXT NOT NULL DEFAULT '',   -- comma-joined, in offer order; '' = default
    enabled    INTEGER NOT NULL DEFAULT 1
);

-- Registrar bindings (RFC 3261 §10), persisted behind the in-memory location
-- service so that a restart keeps registrations. expires_at is absolute.
CREATE TABLE bindings (
    aor        TEXT NOT NULL,
    key        TEXT NOT NULL,
    contact    TEXT NOT NULL,
    expires_at REAL NOT NULL,
    q          REAL NOT NULL DEFAULT 1.0,
    call_id    TEXT NOT NULL DEFAULT '',
    cseq       INTEGER NOT NULL DEFAULT 0,
    received   TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    node_id    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (aor, key)
);

CREATE INDEX bindings_expires_at ON bindings (expires_at);
