-- Orbit device configuration (services/orbit): the source of truth per device.
-- Values are raw integers (temp_high 3050 = 30.50 °C); services/orbit/params.py scales them.
-- Idempotent: safe to apply again.

-- One row per Orbit device that has been configured, acked or asked for a downlink; a device
-- without a row has the factory defaults of its model (devices.model). The row is also the
-- per-device lock (SELECT ... FOR UPDATE) that serialises every change of its configuration.
CREATE TABLE IF NOT EXISTS orbit_config (
    device  text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    active  jsonb NOT NULL,                      -- {param name: raw value}, as last acked
    seq     integer NOT NULL DEFAULT 0           -- seq of the last downlink sent; 0 before any
            CHECK (seq BETWEEN 0 AND 255),
    updated timestamptz NOT NULL DEFAULT now()
);

-- Pending updates. Per parameter: queued, in_flight, in_flight + queued (sent after the ack),
-- or failed; hence one row per (device, param, status).
CREATE TABLE IF NOT EXISTS orbit_pending (
    device    text NOT NULL REFERENCES orbit_config (device) ON DELETE CASCADE,
    param     text NOT NULL,
    status    text NOT NULL CHECK (status IN ('queued', 'in_flight', 'failed')),
    value_raw integer NOT NULL,
    queued_at timestamptz NOT NULL,
    attempts  integer NOT NULL DEFAULT 0,        -- sends that went unanswered
    seq       integer,                           -- downlink it was last sent in
    sent_at   timestamptz,
    uplinks_since_send integer NOT NULL DEFAULT 0,
    PRIMARY KEY (device, param, status)
);

-- Every answered downlink request: the frame sent, or NULL for "no downlink". A retried or
-- duplicated request (same device and Sigfox seqNumber) gets the recorded answer again. Rows
-- with a frame are the downlinks sent, which the 4-per-24-hours budget counts.
CREATE TABLE IF NOT EXISTS orbit_downlink_requests (
    id                bigserial PRIMARY KEY,
    device            text NOT NULL REFERENCES orbit_config (device) ON DELETE CASCADE,
    sigfox_seq_number integer NOT NULL,
    answered_at       timestamptz NOT NULL,
    seq               integer,                   -- NULL: no downlink
    frame             text,                      -- 16 hex digits; NULL: no downlink
    updates           jsonb                      -- {param name: raw value}, in frame order
);
CREATE INDEX IF NOT EXISTS orbit_downlink_requests_request_idx
    ON orbit_downlink_requests (device, sigfox_seq_number, answered_at DESC);
CREATE INDEX IF NOT EXISTS orbit_downlink_requests_sent_idx
    ON orbit_downlink_requests (device, answered_at DESC) WHERE frame IS NOT NULL;

-- Uplinks already applied, so that a replayed or duplicated uplink (same device and Sigfox
-- seqNumber) is applied once: kind 'ack' (its parameter ack) and 'count' (its count towards an
-- in-flight update's time-out). seen_at is the uplink's network time; a seqNumber seen again
-- more than a day later is a new uplink (seqNumbers wrap).
CREATE TABLE IF NOT EXISTS orbit_uplinks_seen (
    device            text NOT NULL REFERENCES orbit_config (device) ON DELETE CASCADE,
    sigfox_seq_number integer NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('ack', 'count')),
    seen_at           timestamptz NOT NULL,
    PRIMARY KEY (device, sigfox_seq_number, kind)
);
