"""The Kafka producer's stop is bounded: aiokafka's waits for every pending batch, and retries
one the broker keeps refusing forever (aio-libs/aiokafka#1101)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from services.platform import kafka
from services.platform.kafka import KafkaPublisher


class _StuckProducer:
    def __init__(self) -> None:
        self.stopping = False

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.Event().wait()


class _Producer:
    def __init__(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True


async def test_a_stop_that_never_ends_is_given_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kafka, "STOP_GRACE", 0.1)
    publisher = KafkaPublisher("127.0.0.1:1", timeout=0.1)
    stuck = _StuckProducer()
    publisher._producer = stuck  # type: ignore[assignment]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await publisher.stop()
    assert stuck.stopping
    assert time.monotonic() - started < 2.0
    assert not publisher.started
    assert "did not stop within" in caplog.text


async def test_a_stop_that_ends_is_awaited() -> None:
    publisher = KafkaPublisher("127.0.0.1:1")
    producer = _Producer()
    publisher._producer = producer  # type: ignore[assignment]
    await publisher.stop()
    assert producer.stopped
    assert not publisher.started
