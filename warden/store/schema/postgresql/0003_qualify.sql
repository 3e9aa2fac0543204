-- Warden schema 0003 (PostgreSQL): per-extension qualify (OPTIONS keep-alive and
-- reachability).
ALTER TABLE extensions ADD COLUMN qualify BOOLEAN NOT NULL DEFAULT FALSE;
