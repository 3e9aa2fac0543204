-- Warden schema 0006: each binding keeps its REGISTER's top Via sent-by
-- (host:port), so that a NAT can be told apart from a phone that registers from
-- one port and listens on another (warden.sip.addressing.behind_nat). Bindings
-- stored before have '' and keep the old rule (source differs from Contact).
ALTER TABLE bindings ADD COLUMN sent_by TEXT NOT NULL DEFAULT '';
