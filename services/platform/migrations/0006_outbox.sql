-- Transactional outbox (services/outbox.py): Kafka messages written in the same transaction as
-- the state they describe, published afterwards by a relay that deletes them once Kafka has
-- acknowledged (at-least-once). The Sigfox downlink request puts its uplink envelope here so that
-- its answer never waits for Kafka; the Orbit changes put their device events here.
-- Idempotent: safe to apply again.
CREATE TABLE IF NOT EXISTS kafka_outbox (
    id      bigserial PRIMARY KEY,               -- publication order
    topic   text NOT NULL,                       -- without the configurable prefix: 'uplinks'
    key     text NOT NULL,                       -- the device id
    value   bytea NOT NULL,                      -- the JSON message as published
    created timestamptz NOT NULL DEFAULT now()
);
