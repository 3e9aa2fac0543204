-- Warden schema 0005: admin credential generations and API token expiry.
-- An account's generation moves when its password changes or MFA is enrolled;
-- sessions and API tokens carry the generation they were issued under and stop
-- working when it moves. A disabled account cannot log in and its sessions and
-- tokens stop working. Tokens made before this version expire 90 days after
-- the upgrade.
ALTER TABLE admin_accounts ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE admin_accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN owner_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN expires_at REAL;
UPDATE api_tokens SET expires_at = CAST(strftime('%s', 'now') AS REAL) + 90 * 86400;
