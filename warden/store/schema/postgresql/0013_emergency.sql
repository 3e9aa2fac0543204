-- Warden schema 0013 (PostgreSQL): emergency calls (the e911 plugin, ADR
-- 0027). Dispatchable locations: named civic addresses (RFC 5139 elements as
-- a JSON object), the location of each extension, and networks (CIDR text)
-- mapped to a location for devices that move. Named apart from the
-- registrar's location service (bindings). A call record says whether the
-- call was an emergency call.
CREATE TABLE civic_locations (
    name TEXT PRIMARY KEY,
    civic TEXT NOT NULL
);
CREATE TABLE extension_locations (
    number TEXT PRIMARY KEY,
    location TEXT NOT NULL REFERENCES civic_locations (name)
);
CREATE TABLE subnet_locations (
    network TEXT PRIMARY KEY,
    location TEXT NOT NULL REFERENCES civic_locations (name)
);
ALTER TABLE call_records ADD COLUMN emergency BOOLEAN NOT NULL DEFAULT FALSE;
