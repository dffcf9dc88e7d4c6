-- Core schema: accounts, devices, points, events, deduplication.
CREATE TABLE IF NOT EXISTS users (
    id            bigserial PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    is_integrator boolean NOT NULL DEFAULT false,
    parent_id     bigint REFERENCES users (id) ON DELETE CASCADE,
    rate_per_minute integer,
    rate_per_day    integer,
    created       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_keys (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text NOT NULL,
    prefix     text NOT NULL,
    key_hash   bytea NOT NULL UNIQUE,
    scopes     text[] NOT NULL,
    expiration timestamptz,
    revoked    boolean NOT NULL DEFAULT false,
    created    timestamptz NOT NULL DEFAULT now(),
    last_used  timestamptz,
    UNIQUE (user_id, name)
);

CREATE TABLE IF NOT EXISTS devices (
    id        text PRIMARY KEY,
    name      text NOT NULL DEFAULT '',
    model     text NOT NULL,
    network   text NOT NULL,
    owner_id  bigint NOT NULL REFERENCES users (id),
    active    boolean NOT NULL DEFAULT true,
    created   timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz,
    battery_mv integer,
    firmware  text
);
CREATE INDEX IF NOT EXISTS devices_owner_idx ON devices (owner_id);

-- Narrow table of data points; a hypertable where TimescaleDB is present (see timescale.py).
CREATE TABLE IF NOT EXISTS points (
    device text NOT NULL,
    metric text NOT NULL,
    time   timestamptz NOT NULL,
    value  double precision NOT NULL,
    unit   text,
    PRIMARY KEY (device, metric, time)
);
CREATE INDEX IF NOT EXISTS points_device_time_idx ON points (device, time DESC);

-- Latest value per device and metric, so "latest" queries never scan points.
CREATE TABLE IF NOT EXISTS device_latest (
    device text NOT NULL,
    metric text NOT NULL,
    time   timestamptz NOT NULL,
    value  double precision NOT NULL,
    unit   text,
    PRIMARY KEY (device, metric)
);

-- Latest relay-controller state report per device.
CREATE TABLE IF NOT EXISTS device_state (
    device   text PRIMARY KEY,
    time     timestamptz NOT NULL,
    state    jsonb NOT NULL
);

CREATE TABLE IF NOT EXISTS device_events (
    id      bigserial PRIMARY KEY,
    device  text NOT NULL,
    time    timestamptz NOT NULL,
    type    text NOT NULL,
    data    jsonb NOT NULL DEFAULT '{}'::jsonb,
    dedup_key text UNIQUE
);
CREATE INDEX IF NOT EXISTS device_events_device_time_idx ON device_events (device, time DESC);

-- Uplink deduplication shared by every ingest process.
CREATE TABLE IF NOT EXISTS uplink_dedup (
    key       text PRIMARY KEY,
    seen      timestamptz NOT NULL DEFAULT now(),
    response  jsonb
);
CREATE INDEX IF NOT EXISTS uplink_dedup_seen_idx ON uplink_dedup (seen);
