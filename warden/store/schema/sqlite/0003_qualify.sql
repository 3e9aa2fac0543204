-- Warden schema 0003: per-extension qualify (OPTIONS keep-alive and reachability).
ALTER TABLE extensions ADD COLUMN qualify INTEGER NOT NULL DEFAULT 0;
