-- Warden schema 0001 (PostgreSQL): the directory of extensions and the registrar's
-- bindings. Same tables as the SQLite dialect, with native types. Text keys sort
-- bytewise (COLLATE "C"), as in SQLite, whatever the database's locale.

-- One row per extension. Passwords are never stored, only the digest HA1 values
-- (RFC 2617 MD5, RFC 8760 SHA-256) over number:realm:password.
CREATE TABLE extensions (
    number     TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL DEFAULT '',
    realm      TEXT NOT NULL,
    ha1_md5    TEXT NOT NULL,
    ha1_sha256 TEXT NOT NULL,
    algorithms TEXT NOT NULL DEFAULT '',   -- comma-joined, in offer order; '' = default
    enabled    BOOLEAN NOT NULL DEFAULT TRUE
);

-- A change counter for the directory, so that every node's in-memory snapshot
-- notices changes made by other nodes and wardenctl (SQLite's PRAGMA data_version).
CREATE TABLE directory_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);

CREATE FUNCTION warden_bump_directory_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE directory_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER extensions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON extensions
    FOR EACH STATEMENT EXECUTE FUNCTION warden_bump_directory_version();

-- Registrar bindings (RFC 3261 §10). expires_at is absolute (seconds since the epoch).
CREATE TABLE bindings (
    aor        TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    contact    TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    q          DOUBLE PRECISION NOT NULL DEFAULT 1.0,
    call_id    TEXT NOT NULL DEFAULT '',
    cseq       BIGINT NOT NULL DEFAULT 0,
    received   TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    node_id    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (aor, key)
);

CREATE INDEX bindings_expires_at ON bindings (expires_at);
