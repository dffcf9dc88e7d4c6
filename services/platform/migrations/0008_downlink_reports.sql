-- What the network server reports of a LoRaWAN downlink (services/downlinks.py, note_report):
-- ChirpStack's txack makes a queued downlink 'sent', its ack 'acknowledged' or 'nacked'.
ALTER TABLE lorawan_downlinks DROP CONSTRAINT IF EXISTS lorawan_downlinks_status_check;
ALTER TABLE lorawan_downlinks ADD CONSTRAINT lorawan_downlinks_status_check CHECK (
    status IN ('pending', 'queued', 'sent', 'acknowledged', 'nacked', 'failed', 'cleared')
);
