-- Warden schema 0005 (PostgreSQL): admin credential generations and API token
-- expiry. An account's generation moves when its password changes or MFA is
-- enrolled; sessions and API tokens carry the generation they were issued under
-- and stop working when it moves. A disabled account cannot log in and its
-- sessions and tokens stop working. Tokens made before this version expire 90
-- days after the upgrade.
ALTER TABLE admin_accounts ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE admin_accounts ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE api_tokens ADD COLUMN owner_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_tokens ADD COLUMN expires_at DOUBLE PRECISION;
UPDATE api_tokens SET expires_at = EXTRACT(EPOCH FROM now())::DOUBLE PRECISION + 90 * 86400;
