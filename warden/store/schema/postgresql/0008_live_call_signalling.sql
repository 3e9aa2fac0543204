-- Warden schema 0008: each live call says per leg how its signalling travels
-- ('udp', 'tcp', or 'tls': encrypted), for wardenctl calls (ADR 0018). Rows
-- published before have '' (not known).
ALTER TABLE live_calls ADD COLUMN caller_signalling TEXT NOT NULL DEFAULT '';
ALTER TABLE live_calls ADD COLUMN callee_signalling TEXT NOT NULL DEFAULT '';
