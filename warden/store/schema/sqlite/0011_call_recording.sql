-- Warden schema 0011: a call record links the call's recording (ADR 0024):
-- the WAV file relative to the recordings directory ('' for none, or once
-- retention deleted it), and what is known about it (JSON: started_at,
-- trigger, by; deleted_at and file once deleted). The index serves the
-- retention sweep (recordings older than retention_days).
ALTER TABLE call_records ADD COLUMN recording TEXT NOT NULL DEFAULT '';
ALTER TABLE call_records ADD COLUMN recording_info TEXT NOT NULL DEFAULT '{}';
CREATE INDEX call_records_recording ON call_records (started_at) WHERE recording <> '';
