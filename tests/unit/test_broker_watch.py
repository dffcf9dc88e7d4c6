"""The embedded Kafka's watch in ``hivepipe up``: a broker that started again (empty) or grew
past its memory budget means the workers start again too (their offsets are gone); past the
budget it is recycled only while the intake journal keeps what it holds."""

from __future__ import annotations

from typing import Any

import pytest

from services.entrypoints import broker_watch
from services.entrypoints.broker_watch import BrokerWatch
from services.platform.settings import Settings


class FakeChild:
    def __init__(self, role: str) -> None:
        self.role = role
        self.generation = 1
        self.process: Any = object()
        self.recycled: list[str] = []

    def recycle(self, why: str, *, kill: bool = False) -> None:
        self.recycled.append(why)
        self.generation += 1


def _watch(**settings: Any) -> tuple[BrokerWatch, FakeChild, FakeChild, FakeChild]:
    kafka, worker, api = FakeChild("kafka"), FakeChild("worker"), FakeChild("api")
    watch = BrokerWatch(Settings(embedded=True, **settings), kafka, [worker, api])  # type: ignore[arg-type]
    return watch, kafka, worker, api


def test_a_broker_started_again_restarts_the_workers_only() -> None:
    watch, kafka, worker, api = _watch(embedded_kafka_max_mib=0)
    watch.check(0.0)
    assert worker.recycled == []
    kafka.generation += 1  # the supervisor started it again after it died
    watch.check(1.0)
    assert len(worker.recycled) == 1
    assert "offsets" in worker.recycled[0]
    assert api.recycled == []
    watch.check(2.0)
    assert len(worker.recycled) == 1


@pytest.mark.parametrize("journal", [True, False])
def test_a_broker_over_its_budget_is_recycled_only_with_the_journal(
    monkeypatch: pytest.MonkeyPatch, journal: bool
) -> None:
    watch, kafka, worker, _ = _watch(embedded_kafka_max_mib=100, intake_journal=journal)
    held = {"mib": 50.0}
    monkeypatch.setattr(broker_watch, "kafka_memory_mib", lambda _server: held["mib"])
    watch.check(0.0)
    assert kafka.recycled == []
    held["mib"] = 150.0
    watch.check(5.0)  # checked every 10 s
    assert kafka.recycled == []
    watch.check(10.0)
    assert len(kafka.recycled) == (1 if journal else 0)
    assert len(worker.recycled) == (1 if journal else 0)
    watch.check(11.0)  # its own recycling is not taken for a crash
    assert len(worker.recycled) == (1 if journal else 0)
