"""The decode step feeds the webhook agent only the readings of devices that have webhooks
(``webhook-readings``), against a real PostgreSQL and a real Kafka: a webhook registered or
deleted before a batch is stored is seen by that batch, whatever the directory had cached."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from psycopg_pool import AsyncConnectionPool

from services.devices import DeviceDirectory
from services.platform.db import open_pool
from services.platform.events import (
    ALL_TOPICS,
    TOPIC_READINGS,
    TOPIC_WEBHOOK_READINGS,
    UplinkEnvelope,
)
from services.platform.kafka import KafkaPublisher, ensure_topics
from services.readings import process_uplinks
from services.webhooks import WebhookDirectory
from services.webhooks.registrations import delete_webhook
from tests.integration.test_webhook_store import Conn, connect, device, user, webhook
from tests.unit.test_codecs_orbit import temperature_batch


@pytest.fixture
async def conn(migrated_url: str) -> AsyncIterator[Conn]:
    async with await connect(migrated_url) as c:
        yield c


def uplink(device_id: str, n: int) -> UplinkEnvelope:
    """An Orbit temperature batch of two samples (two points)."""
    return UplinkEnvelope(
        source="sigfox",
        device=device_id,
        received=1_700_000_000.0 + n,
        payload_hex=temperature_batch(1, [2000 + n, 2100 + n]),
    )


async def messages(bootstrap: str, topic: str, want: int) -> list[tuple[str, dict[str, Any]]]:
    """The messages of ``topic``, (key, value): ``want`` of them, and any more that come within
    a second after (so that one too many is seen)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[tuple[str, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if len(found) >= want:
                deadline = min(deadline, time.monotonic() + 1.0)
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found += [(r.key.decode(), orjson.loads(r.value)) for r in records if r.key]
    finally:
        await consumer.stop()
    return found


async def test_only_the_readings_of_devices_with_webhooks_are_fed_to_the_webhook_agent(
    conn: Conn, migrated_url: str, kafka_server: str, topic_prefix: str
) -> None:
    owner = await user(conn)
    hooked, plain = await device(conn, owner), await device(conn, owner)
    hook_id = (await webhook(conn, hooked, owner)).id

    def topic(name: str) -> str:
        return f"{topic_prefix}{name}"

    await ensure_topics(kafka_server, [topic(t) for t in ALL_TOPICS], 1)
    pool: AsyncConnectionPool[Conn] = await open_pool(migrated_url, size=2)
    publisher = KafkaPublisher(kafka_server)
    # A long cache: only the directory's generation can tell it of the changes below.
    webhooks = WebhookDirectory(ttl=3600)
    devices = DeviceDirectory(ttl=0)

    async def process(*envelopes: UplinkEnvelope) -> None:
        result = await process_uplinks(
            list(envelopes),
            pool=pool,
            publisher=publisher,
            directory=devices,
            topic=topic,
            webhooks=webhooks,
        )
        assert result.stored == 2 * len(envelopes)

    try:
        first = [uplink(hooked, 0), uplink(plain, 0)]
        await process(*first)
        # A webhook registered for the plain device, one deleted from the other: both before
        # the next batch is stored, so both are in effect for it.
        await webhook(conn, plain, owner)
        assert await delete_webhook(conn, webhook_id=hook_id, device=hooked, owner_id=owner)
        second = [uplink(hooked, 1), uplink(plain, 1)]
        await process(*second)

        readings = await messages(kafka_server, topic(TOPIC_READINGS), 4)
        fed = await messages(kafka_server, topic(TOPIC_WEBHOOK_READINGS), 2)
        every = first + second
        assert sorted(v["uplink"] for _, v in readings) == sorted(e.id for e in every)
        assert {v["uplink"]: (k, v) for k, v in fed} == {
            v["uplink"]: (k, v) for k, v in readings if v["uplink"] in (first[0].id, second[1].id)
        }
        assert all(k == v["device"] for k, v in fed)
    finally:
        await publisher.stop()
        await pool.close()


async def test_without_a_directory_every_reading_is_fed(
    conn: Conn, migrated_url: str, kafka_server: str, topic_prefix: str
) -> None:
    plain = await device(conn, await user(conn))

    def topic(name: str) -> str:
        return f"{topic_prefix}{name}"

    await ensure_topics(kafka_server, [topic(t) for t in ALL_TOPICS], 1)
    pool: AsyncConnectionPool[Conn] = await open_pool(migrated_url, size=2)
    publisher = KafkaPublisher(kafka_server)
    try:
        envelope = uplink(plain, 0)
        await process_uplinks(
            [envelope], pool=pool, publisher=publisher, directory=DeviceDirectory(), topic=topic
        )
        fed = await messages(kafka_server, topic(TOPIC_WEBHOOK_READINGS), 1)
        assert [(k, v["uplink"]) for k, v in fed] == [(plain, envelope.id)]
    finally:
        await publisher.stop()
        await pool.close()
