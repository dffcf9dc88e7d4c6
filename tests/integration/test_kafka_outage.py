"""Kafka away, with a producer that was started while it was up: ``/readyz`` says so (503,
``checks.kafka`` false) instead of trusting the producer started once, and says ready again
once a broker answers on the same address."""

from __future__ import annotations

import time
from pathlib import Path

from services.entrypoints import embedded
from services.platform.db import migrate
from services.platform.kafka import KafkaPublisher
from tests.api_support import api_settings, connect, running_api
from tests.conftest import drop_schema, new_schema


async def test_a_started_producer_notices_that_the_broker_went_away(tmp_path: Path) -> None:
    broker = embedded.start_kafka(tmp_path)
    port = int(broker.url.rsplit(":", 1)[1])
    publisher = KafkaPublisher(broker.url, timeout=2.0)
    try:
        assert await publisher.reachable()
        broker.stop()
        started = time.monotonic()
        assert not await publisher.reachable(within=2.0)
        assert time.monotonic() - started < 3.0
        broker = embedded.start_kafka(tmp_path, port)
        deadline = time.monotonic() + 15
        while not await publisher.reachable() and time.monotonic() < deadline:
            pass
        assert await publisher.reachable()
    finally:
        await publisher.stop()
        broker.stop()


async def test_readyz_is_503_while_kafka_is_away(pg_server: str, tmp_path: Path) -> None:
    broker = embedded.start_kafka(tmp_path)
    name, url = new_schema(pg_server)
    try:
        async with await connect(url) as conn:
            await migrate(conn)  # type: ignore[arg-type]
        settings = api_settings(database_url=url, kafka=broker.url, data_dir=tmp_path)
        async with running_api(settings) as api:
            ready = await api.client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["kafka"] is True
            broker.stop()
            ready = await api.client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["error"]["code"] == "not_ready"
            assert ready.json()["error"]["checks"]["kafka"] is False
    finally:
        broker.stop()
        drop_schema(pg_server, name)
