-- Warden schema 0010 (PostgreSQL): call features per extension (the
-- callfeatures plugin): call forwarding (unconditional, busy, no answer) and
-- do-not-disturb. A row exists only for an extension with a feature set.
CREATE TABLE call_features (
    number TEXT PRIMARY KEY,
    forward_all TEXT NOT NULL DEFAULT '',
    forward_busy TEXT NOT NULL DEFAULT '',
    forward_no_answer TEXT NOT NULL DEFAULT '',
    dnd BOOLEAN NOT NULL DEFAULT FALSE
);
