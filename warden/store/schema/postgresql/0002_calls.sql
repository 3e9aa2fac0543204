-- Warden schema 0002 (PostgreSQL): call records (CDRs) and the summaries of calls
-- in progress.

-- One row per finished call, written once by the B2BUA (through the CDR spool).
-- call_id makes a replayed record harmless (INSERT ... ON CONFLICT DO NOTHING).
-- Times are seconds since the epoch; answered_at is NULL for unanswered calls.
CREATE TABLE call_records (
    call_id      TEXT COLLATE "C" PRIMARY KEY,
    caller       TEXT COLLATE "C" NOT NULL,
    caller_name  TEXT NOT NULL DEFAULT '',
    callee       TEXT COLLATE "C" NOT NULL DEFAULT '',
    dialled      TEXT COLLATE "C" NOT NULL,
    started_at   DOUBLE PRECISION NOT NULL,
    answered_at  DOUBLE PRECISION,
    ended_at     DOUBLE PRECISION NOT NULL,
    disposition  TEXT NOT NULL
        CHECK (disposition IN ('ANSWERED', 'BUSY', 'NO ANSWER', 'FAILED', 'CANCELLED')),
    hangup_cause TEXT NOT NULL DEFAULT '',
    hangup_side  TEXT NOT NULL CHECK (hangup_side IN ('caller', 'callee', 'system')),
    codec        TEXT NOT NULL DEFAULT '',
    media        JSONB NOT NULL DEFAULT '{}',  -- per-leg media statistics
    node_id      TEXT NOT NULL DEFAULT ''
);

-- Listing is keyset-paged on (started_at, call_id); the per-number indexes serve
-- "calls of extension N" (caller, callee or dialled) in time order.
CREATE INDEX call_records_started_at ON call_records (started_at, call_id);
CREATE INDEX call_records_caller ON call_records (caller, started_at);
CREATE INDEX call_records_callee ON call_records (callee, started_at);
CREATE INDEX call_records_dialled ON call_records (dialled, started_at);

-- Calls in progress, published by the node handling each one; a node deletes its
-- own rows when it starts (they are left over from before a crash).
CREATE TABLE live_calls (
    call_id     TEXT COLLATE "C" PRIMARY KEY,
    caller      TEXT NOT NULL,
    callee      TEXT NOT NULL DEFAULT '',
    dialled     TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL CHECK (state IN ('ringing', 'answered', 'on hold')),
    started_at  DOUBLE PRECISION NOT NULL,
    answered_at DOUBLE PRECISION,
    codec       TEXT NOT NULL DEFAULT '',
    packets     BIGINT NOT NULL DEFAULT 0,
    node_id     TEXT NOT NULL DEFAULT '',
    updated_at  DOUBLE PRECISION NOT NULL
);

CREATE INDEX live_calls_node_id ON live_calls (node_id);
