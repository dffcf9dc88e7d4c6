-- Device ids are compared case-insensitively (api-contract.md): no two devices whose ids differ
-- only by case (MQTT ids keep the case they were registered with; hex ids are upper-case), and
-- the API's lookups by id use this index. Fails, and says so, on a database that already holds
-- two such ids: rename one, then start again.
CREATE UNIQUE INDEX IF NOT EXISTS devices_id_ci ON devices (upper(id));
