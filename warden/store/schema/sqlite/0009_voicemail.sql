-- Warden schema 0009: voicemail (the voicemail plugin). A mailbox row
-- exists only for a mailbox with a setting (PIN hash, custom greeting, failed
-- PIN count); messages keep the name of their WAV file under the data
-- directory's voicemail folder.
CREATE TABLE voicemail_mailboxes (
    number TEXT PRIMARY KEY,
    pin_hash TEXT NOT NULL DEFAULT '',
    greeting TEXT NOT NULL DEFAULT '',
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0
);

CREATE TABLE voicemail_messages (
    message_id TEXT PRIMARY KEY,
    mailbox TEXT NOT NULL,
    caller TEXT NOT NULL,
    caller_name TEXT NOT NULL,
    received_at REAL NOT NULL,
    duration REAL NOT NULL,
    folder TEXT NOT NULL,
    audio TEXT NOT NULL,
    size INTEGER NOT NULL
);

CREATE INDEX voicemail_messages_mailbox ON voicemail_messages (mailbox, received_at);
