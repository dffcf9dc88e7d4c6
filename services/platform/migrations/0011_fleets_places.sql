-- Issue #20: an account's profile, its fleets (named groups of devices) and places (where
-- devices are installed) with each device's place history (services/accounts/profile.py,
-- services/fleets: one owner module per table). Idempotent: safe to apply again.

-- One row per account, on the account's own user (the integrator, or the standalone user).
CREATE TABLE IF NOT EXISTS account_profiles (
    account_id   bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    name         text,
    contact_name text,
    country      text CHECK (country ~ '^[A-Z]{2}$'),  -- ISO 3166-1 alpha-2
    updated      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS fleets (
    id         bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text NOT NULL,
    created    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);

-- A device may belong to several fleets; deleting the device removes it from them (cascade).
CREATE TABLE IF NOT EXISTS fleet_devices (
    fleet_id bigint NOT NULL REFERENCES fleets (id) ON DELETE CASCADE,
    device   text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    added    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fleet_id, device)
);
CREATE INDEX IF NOT EXISTS fleet_devices_device_idx ON fleet_devices (device);

CREATE TABLE IF NOT EXISTS places (
    id         bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text NOT NULL,
    type       text NOT NULL,
    latitude   double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude  double precision CHECK (longitude BETWEEN -180 AND 180),
    address    text,
    created    timestamptz NOT NULL DEFAULT now(),
    CHECK ((latitude IS NULL) = (longitude IS NULL))
);
CREATE INDEX IF NOT EXISTS places_account_idx ON places (account_id);

-- Where each device was, and is: a stay at a place from `since` until `until` (NULL: it is still
-- there). A device has at most one open stay. No foreign key to devices: the history outlives
-- the device (a deleted device's open stay is closed, below); a deleted place takes its stays.
CREATE TABLE IF NOT EXISTS device_places (
    id       bigserial PRIMARY KEY,
    device   text NOT NULL,
    place_id bigint NOT NULL REFERENCES places (id) ON DELETE CASCADE,
    since    timestamptz NOT NULL,
    until    timestamptz,
    CHECK (until IS NULL OR until > since)
);
CREATE UNIQUE INDEX IF NOT EXISTS device_places_open_idx ON device_places (device)
    WHERE until IS NULL;
CREATE INDEX IF NOT EXISTS device_places_device_idx ON device_places (device, since DESC);
CREATE INDEX IF NOT EXISTS device_places_place_idx ON device_places (place_id, since DESC);

-- Deleting a device closes its current stay in the same transaction, whoever deletes it (the
-- API, the CLI): the stay is kept, ended at the deletion. A stay opened at this very instant
-- ends a microsecond later (a stay is never empty).
CREATE OR REPLACE FUNCTION device_places_close() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE device_places SET until = GREATEST(now(), since + INTERVAL '1 microsecond')
    WHERE device = OLD.id AND until IS NULL;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS devices_close_place ON devices;
CREATE TRIGGER devices_close_place AFTER DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION device_places_close();
