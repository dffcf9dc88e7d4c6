-- Issue #17: an account's own device models, each with its JavaScript payload codec
-- (services/codecs/model_store.py owns the table). A device of such a model names it in
-- devices.model; the model is the one of the device owner's account. Idempotent.
CREATE TABLE IF NOT EXISTS device_models (
    account_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    id            text NOT NULL CHECK (id ~ '^[a-z0-9-]{2,64}$'),
    network       text NOT NULL CHECK (network IN ('lorawan', 'mqtt', 'sigfox')),
    language      text NOT NULL DEFAULT 'javascript' CHECK (language = 'javascript'),
    source        text NOT NULL,
    units         jsonb NOT NULL DEFAULT '{}'::jsonb,
    variables     jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The codec's functions found when it was compiled (decodeUplink, normalizeUplink, ...).
    functions     text[] NOT NULL DEFAULT '{}',
    -- Increases at each change of the codec: a worker recompiles when it sees a new one.
    version       integer NOT NULL DEFAULT 1,
    -- Since when every uplink of the model failed to decode (NULL: the last one decoded).
    failing_since timestamptz,
    last_error    text,
    last_error_at timestamptz,
    created       timestamptz NOT NULL DEFAULT now(),
    updated       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, id)
);
