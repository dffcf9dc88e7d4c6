"""Helpers of the Orbit tests: read a real Kafka topic until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.platform.settings import Settings

Message = dict[str, Any]


async def read_until(
    settings: Settings,
    topic: str,
    done: Callable[[list[Message]], bool],
    *,
    timeout: float = 15.0,
) -> list[Message]:
    """Every message of ``topic`` (unprefixed name) from the beginning, read until
    ``done(messages)`` holds; fails after ``timeout``. tansu's end offsets are not trusted:
    read, check, read more."""
    name = settings.topic(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    seen: list[Message] = []
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(name) or set()
        assert partitions, f"no topic {name}"
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while not done(seen):
            assert time.monotonic() < deadline, f"{topic}: condition not met; read {seen!r}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(orjson.loads(r.value) for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return seen


def of(device: str, kind: str | None = None) -> Callable[[Message], bool]:
    """A predicate: the message is about ``device`` (and of type ``kind``)."""
    return lambda m: m.get("device") == device and (kind is None or m.get("type") == kind)
