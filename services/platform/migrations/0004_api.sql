-- API: LoRaWAN downlinks requested through the API, and daily usage counters.
-- Idempotent: safe to apply again.

-- One row per downlink requested with POST /v1/devices/{id}/downlinks, with the network
-- server's answer. status: pending (being pushed), queued (the network server took it),
-- failed (it did not), cleared (DELETE /v1/devices/{id}/downlinks flushed the queue).
CREATE TABLE IF NOT EXISTS lorawan_downlinks (
    id             bigserial PRIMARY KEY,
    device         text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    port           integer NOT NULL CHECK (port BETWEEN 1 AND 223),
    payload_hex    text NOT NULL,
    confirmed      boolean NOT NULL DEFAULT false,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'queued', 'failed', 'cleared')),
    network_server text,
    answer_status  integer,
    answer         jsonb,
    requested      timestamptz NOT NULL DEFAULT now(),
    requested_by   bigint REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS lorawan_downlinks_device_idx ON lorawan_downlinks (device, id DESC);

-- Usage per user and UTC day, upserted in batches (services/usage.py): never one write per event.
CREATE TABLE IF NOT EXISTS usage_daily (
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day          date NOT NULL,
    uplinks      bigint NOT NULL DEFAULT 0,
    points       bigint NOT NULL DEFAULT 0,
    deliveries   bigint NOT NULL DEFAULT 0,
    api_requests bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);

-- Users of an integrator, listed by parent.
CREATE INDEX IF NOT EXISTS users_parent_idx ON users (parent_id);

-- The API key lookup of every authenticated request (services/auth/keys.py). A PL/pgSQL function
-- because it keeps its plan for the session: the API's connections cannot use prepared
-- statements (PgBouncer, PGlite), and planning this join costs several times its execution.
-- Nothing is cached across requests: a revoked or deleted key is refused on the next one.
CREATE OR REPLACE FUNCTION api_key_principal(p_hash bytea)
RETURNS TABLE (key_id bigint, key_name text, scopes text[], expiration timestamptz,
               revoked boolean, user_id bigint, username text, is_integrator boolean,
               account_id bigint, rate_per_minute integer, rate_per_day integer)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT k.id, k.name, k.scopes, k.expiration, k.revoked,
           u.id, u.username, u.is_integrator, a.id, a.rate_per_minute, a.rate_per_day
    FROM api_keys k
    JOIN users u ON u.id = k.user_id
    JOIN users a ON a.id = COALESCE(u.parent_id, u.id)
    WHERE k.key_hash = p_hash;
END
$$;
