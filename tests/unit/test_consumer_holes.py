"""The worker's consumer reads a partition again when its offsets have a hole (stream.transport).

tansu answered a fetch with a partition's later records before an earlier acknowledged batch
was visible (two producers writing to one partition at once): a consumer that moved on had
skipped that batch for good.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY

from services.platform import HoleGuard
from stream.transport import _Consumer

TP = ("uplinks", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def holes(outcome: str) -> float:
    labels = {"outcome": outcome}
    return REGISTRY.get_sample_value("hivepipe_consumer_offset_holes_total", labels) or 0.0


def test_records_in_order_are_delivered() -> None:
    guard = HoleGuard()
    for offset in range(5):
        assert guard.check(TP, offset, offset - 1 if offset else None) is None
        guard.delivered(TP, offset)
    assert guard.last(TP) == 4
    assert guard.last(("uplinks", 1)) is None


def test_a_hole_is_read_again_from_its_start_until_filled() -> None:
    guard = HoleGuard(clock=Clock())
    filled = holes("filled")
    guard.delivered(TP, 10)
    assert guard.check(TP, 13, 10) == 11  # 11 and 12 not visible yet
    # Read again: the consumer's read offset is the last delivered (10), as after a delivery.
    assert guard.check(TP, 13, 10) == 11  # still missing: again
    assert guard.check(TP, 11, 10) is None  # there now
    guard.delivered(TP, 11)
    assert holes("filled") == filled + 1
    assert guard.check(TP, 12, 11) is None


def test_a_hole_that_stays_is_kept_after_the_patience() -> None:
    clock = Clock()
    guard = HoleGuard(patience=2.0, clock=clock)
    kept = holes("kept")
    guard.delivered(TP, 10)
    assert guard.check(TP, 20, 10) == 11
    clock.now += 1.9
    assert guard.check(TP, 20, 10) == 11
    clock.now += 0.2
    assert guard.check(TP, 20, 10) is None  # a real gap (a transaction marker, say)
    guard.delivered(TP, 20)
    assert holes("kept") == kept + 1
    assert guard.check(TP, 21, 20) is None


def test_a_seek_of_fausts_own_is_followed() -> None:
    guard = HoleGuard(clock=Clock())
    guard.delivered(TP, 10)
    # A rebalance put the partition at its committed offset 40: no hole to read again.
    assert guard.check(TP, 40, 40) is None
    assert guard.check(TP, 45, 40) is None
    # A hole being read again when Faust seeks elsewhere is given up.
    guard.delivered(TP, 45)
    assert guard.check(TP, 50, 45) == 46
    assert guard.check(TP, 7, 6) is None


def test_partitions_are_apart() -> None:
    guard = HoleGuard(clock=Clock())
    other = ("uplinks", 1)
    guard.delivered(TP, 10)
    guard.delivered(other, 3)
    assert guard.check(TP, 12, 10) == 11
    assert guard.check(other, 4, 3) is None


class FakeConsumer:
    """What ``_Consumer._deliver`` uses of a Faust consumer, and the seeks it asked for."""

    def __init__(self) -> None:
        self.delivered: list[int] = []
        self.sought: list[int] = []
        self._read_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self.holes = HoleGuard(clock=Clock())
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda _t: True))
        self.gaps: list[tuple[int, int]] = []

    async def callback(self, message: Any) -> None:
        self.delivered.append(message.offset)

    async def _add_gap(self, tp: Any, start: int, end: int) -> None:
        self.gaps.append((start, end))

    async def _read_again(self, tp: Any, offset: int) -> None:
        self.sought.append(offset)
        self._read_offset[tp] = offset - 1


async def fetched(offsets: list[int]) -> AsyncIterator[tuple[Any, Any]]:
    for offset in offsets:
        yield TP, SimpleNamespace(offset=offset, topic="uplinks")


async def deliver(consumer: FakeConsumer, offsets: list[int]) -> None:
    records = fetched(offsets)
    first = await anext(records)
    await _Consumer._deliver(consumer, first, records)  # type: ignore[arg-type]


def test_the_consumer_reads_the_partition_again_and_delivers_every_record() -> None:
    async def run() -> FakeConsumer:
        consumer = FakeConsumer()
        await deliver(consumer, [0, 1, 2])
        await deliver(consumer, [5, 6, 7])  # 3 and 4 not visible yet: the rest comes again
        await deliver(consumer, [3, 4, 5, 6, 7])
        return consumer

    consumer = asyncio.run(run())
    assert consumer.sought == [3]
    assert consumer.delivered == [0, 1, 2, 3, 4, 5, 6, 7]
    assert consumer.gaps == []


def test_a_gap_kept_is_told_to_faust_whole() -> None:
    async def run() -> FakeConsumer:
        consumer = FakeConsumer()
        consumer.holes = HoleGuard(patience=0.0, clock=Clock())
        await deliver(consumer, [0, 1, 2])
        await deliver(consumer, [5, 6])
        await deliver(consumer, [5, 6])  # still missing after the patience: moving on
        return consumer

    consumer = asyncio.run(run())
    assert consumer.sought == [3]
    assert consumer.delivered == [0, 1, 2, 5, 6]
    assert consumer.gaps == [(3, 5)]  # offsets 3 and 4, for the commits
