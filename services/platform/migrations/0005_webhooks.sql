-- Webhooks (services/webhooks, docs/webhooks.md): registrations, the retry queue, and the recent
-- delivery attempts. Idempotent: safe to apply again.

-- A device's webhooks. owner_id is the user who registered it: deliveries go only to webhooks
-- of the device's current owner (a device given to another user stops feeding the former
-- owner's receivers at once; the worker deletes such webhooks). The secret is kept in clear:
-- every attempt is signed with it.
CREATE TABLE IF NOT EXISTS webhooks (
    id                   bigserial PRIMARY KEY,
    device               text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    owner_id             bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url                  text NOT NULL,
    secret               text NOT NULL,
    created              timestamptz NOT NULL DEFAULT now(),
    disabled_at          timestamptz,               -- NULL: active
    disabled_reason      text,
    -- The current run of failed attempts (policy.EndpointHealth), reset by a delivery.
    consecutive_failures integer NOT NULL DEFAULT 0,
    failing_since        timestamptz,
    failures             bigint NOT NULL DEFAULT 0, -- failed attempts, ever
    last_failure         timestamptz,
    last_error           text
);
CREATE INDEX IF NOT EXISTS webhooks_device_idx ON webhooks (device);

-- The retry queue: one row per data point waiting for another attempt to one webhook. A worker
-- claims due rows (FOR UPDATE SKIP LOCKED) and pushes due_at one lease ahead while it sends
-- them, so a row claimed by a worker that dies is due again after the lease.
CREATE TABLE IF NOT EXISTS webhook_retries (
    id          bigserial PRIMARY KEY,
    webhook_id  bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    device      text NOT NULL,
    message_id  text NOT NULL,                  -- the webhook-id header, stable across attempts
    body        text NOT NULL,                  -- the data point JSON, exactly as signed
    attempts    integer NOT NULL DEFAULT 0,     -- attempts made so far (all failed)
    due_at      timestamptz NOT NULL,
    queued      timestamptz NOT NULL DEFAULT now(),
    last_status integer,
    last_error  text,
    UNIQUE (webhook_id, message_id)
);
CREATE INDEX IF NOT EXISTS webhook_retries_due_idx ON webhook_retries (due_at);

-- Recent attempts, written in batches; the worker keeps the newest N per webhook and at most
-- a few days (settings webhook_deliveries_keep, webhook_deliveries_days).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          bigserial PRIMARY KEY,
    webhook_id  bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,           -- when the attempt started
    attempt     integer NOT NULL,               -- 1 for the first attempt of a point
    outcome     text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'gone', 'failed')),
    result      text NOT NULL CHECK (result IN ('delivered', 'retrying', 'dead', 'disabled')),
    status      integer,                        -- HTTP status; NULL when no answer came
    latency_ms  real,
    error       text,
    message_id  text NOT NULL,
    body        text NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook_idx
    ON webhook_deliveries (webhook_id, id DESC);
CREATE INDEX IF NOT EXISTS webhook_deliveries_at_idx ON webhook_deliveries USING brin (at);
