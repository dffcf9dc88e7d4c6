-- Rate-limit counters shared by every API process (services/accounts/rate_counters.py): one row
-- per account and window, counted up by an atomic upsert and started over once `expires` has
-- passed (a fixed window). `hivepipe up` uses it when it runs several API processes; a single
-- process counts in its own memory. UNLOGGED: counters are worth no WAL write per request, and
-- a crash of PostgreSQL that empties the table only starts the current windows over.
-- Idempotent: safe to apply again.
CREATE UNLOGGED TABLE IF NOT EXISTS rate_limits (
    key      text PRIMARY KEY,          -- the `limits` key: namespace, account, amount, window
    count    bigint NOT NULL,
    expires  timestamptz NOT NULL       -- the end of the current window
);
