-- Warden schema 0014: STIR/SHAKEN in call records (ADR 0028): the
-- attestation an outbound call was signed with, or an inbound call's
-- verified PASSporT carried (A, B, C; '' for none), and the verification
-- result of an inbound call (TN-Validation-Passed, TN-Validation-Failed,
-- No-TN-Validation; '' when not verified).
ALTER TABLE call_records ADD COLUMN stir_attest TEXT NOT NULL DEFAULT '';
ALTER TABLE call_records ADD COLUMN stir_verstat TEXT NOT NULL DEFAULT '';
