-- Warden schema 0012: an extension's own ring timeout in seconds before a call
-- counts as unanswered (0: the default, [voicemail] or [calls] ring_timeout);
-- whether a live call is being recorded (wardenctl calls, /api/v1/calls); and
-- the address a mailbox's new messages are emailed to ('' for none).
ALTER TABLE extensions ADD COLUMN ring_timeout REAL NOT NULL DEFAULT 0;
ALTER TABLE live_calls ADD COLUMN recording INTEGER NOT NULL DEFAULT 0;
ALTER TABLE voicemail_mailboxes ADD COLUMN email TEXT NOT NULL DEFAULT '';
