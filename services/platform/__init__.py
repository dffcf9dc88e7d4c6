"""The platform every process shares: settings, the Kafka port and topic repair, the PostgreSQL
pool and migrations, the TimescaleDB layer, the transactional outbox, the Kafka message schemas
(``events``), metrics and process tuning. It imports nothing of the domain."""
