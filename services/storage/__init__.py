"""Storage: the PostgreSQL/TimescaleDB pool, migrations, and the stores of each resource."""
