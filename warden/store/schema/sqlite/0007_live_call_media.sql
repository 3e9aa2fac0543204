-- Warden schema 0007: each live call says per leg whether its media is
-- encrypted ('srtp') or plain ('rtp'), for wardenctl calls (ADR 0019). Rows
-- published before have '' (not known).
ALTER TABLE live_calls ADD COLUMN caller_media TEXT NOT NULL DEFAULT '';
ALTER TABLE live_calls ADD COLUMN callee_media TEXT NOT NULL DEFAULT '';
