-- The intake journal (services/uplinks/journal.py): every uplink accepted for `uplinks` (a 2xx
-- to a network, a PUBACK to a device, a Sigfox downlink request answered) is kept here from the
-- moment it is claimed until the worker has stored it. Written in the same statement or
-- transaction as the dedup claim, so a claim never exists without its uplink: a crash between
-- the claim and Kafka's acknowledgement, or a broker that loses its log, is repaired by
-- replaying the rows still here. With HIVEPIPE_INTAKE_JOURNAL=false (a replicated Kafka
-- cluster) a row only lives until Kafka has acknowledged the uplink.
-- Idempotent: safe to apply again.
CREATE TABLE IF NOT EXISTS uplink_journal (
    id        text PRIMARY KEY,                       -- the envelope's id
    key       text NOT NULL,                          -- the Kafka key (the device id)
    value     bytea NOT NULL,                         -- the `uplinks` message as published
    accepted  timestamptz NOT NULL DEFAULT now(),     -- claimed, or last replayed
    replays   integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS uplink_journal_accepted_idx ON uplink_journal (accepted);
