"""The embedded Kafka's watch in ``hivepipe up``: a broker that started again (empty) or grew
past its memory budget means the workers start again too (their offsets are gone); past the
budget it is recycled only while the intake journal keeps what it holds."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

from services.entrypoints import broker_watch
from services.entrypoints.broker_watch import BrokerWatch
from services.platform.settings import Settings


class FakeChild:
    def __init__(self, role: str) -> None:
        self.role = role
        self.generation = 1
        self.process: Any = SimpleNamespace(pid=-1)  # no such process: no memory, no CPU
        self.recycled: list[str] = []
        self.killed: list[bool] = []

    def recycle(self, why: str, *, kill: bool = False) -> None:
        self.recycled.append(why)
        self.killed.append(kill)
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


@pytest.mark.parametrize("journal", [True, False])
def test_a_broker_over_its_cpu_budget_for_a_minute_is_recycled(
    monkeypatch: pytest.MonkeyPatch, journal: bool
) -> None:
    """Its CPU grows with what it holds (every fetch lists the partition's stored requests):
    past the budget, averaged over a minute, it is recycled as for memory."""
    watch, kafka, worker, _ = _watch(
        embedded_kafka_max_cpu=0.25, embedded_kafka_max_mib=0, intake_journal=journal
    )
    used = {"s": 100.0}
    monkeypatch.setattr(broker_watch, "kafka_cpu_seconds", lambda _server: used["s"])
    for second in range(0, 60, 10):  # 40 % of a core, but less than a minute of it yet
        used["s"] = 100.0 + 0.4 * second
        watch.check(float(second))
    assert kafka.recycled == []
    used["s"] = 100.0 + 0.4 * 60
    watch.check(60.0)
    assert len(kafka.recycled) == (1 if journal else 0)
    assert len(worker.recycled) == (1 if journal else 0)
    if journal:
        assert kafka.killed == [True]  # memory only: nothing to save, no 5 s graceful stop
        assert "40% of a core" in kafka.recycled[0]
        assert "HIVEPIPE_EMBEDDED_KAFKA_MAX_CPU=0.25" in kafka.recycled[0]


def test_a_broker_within_its_cpu_budget_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    watch, kafka, worker, _ = _watch(embedded_kafka_max_cpu=0.25, embedded_kafka_max_mib=0)
    used = {"s": 0.0}
    monkeypatch.setattr(broker_watch, "kafka_cpu_seconds", lambda _server: used["s"])
    for second in range(0, 600, 10):
        # 20 % of a core on average, with a 10-second burst at a whole core now and then
        used["s"] += 1.0 if second % 120 == 0 else 0.12 * 10
        watch.check(float(second))
    assert kafka.recycled == []
    assert worker.recycled == []


def test_the_cpu_window_starts_again_with_a_new_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a recycle the new broker gets a minute of its own before its CPU counts."""
    watch, kafka, _, _ = _watch(embedded_kafka_max_cpu=0.25, embedded_kafka_max_mib=0)
    used = {"s": 0.0}
    monkeypatch.setattr(broker_watch, "kafka_cpu_seconds", lambda _server: used["s"])
    for second in range(0, 70, 10):
        used["s"] = 0.5 * second
        watch.check(float(second))
    assert len(kafka.recycled) == 1
    used["s"] = 0.0  # the new process
    for second in range(70, 120, 10):
        used["s"] += 5.0  # half a core: over the budget, but not for a minute yet
        watch.check(float(second))
    assert len(kafka.recycled) == 1
    used["s"] += 5.0
    watch.check(130.0)
    assert len(kafka.recycled) == 2


def test_cpu_seconds_of_a_live_process() -> None:
    class Live:
        pid = os.getpid()

    class Server:
        process = Live()

    sum(range(2_000_000))  # some CPU of our own
    used = broker_watch.kafka_cpu_seconds(Server())  # type: ignore[arg-type]
    assert used is not None
    assert 0 < used <= sum(os.times()[:2]) + 0.01
