"""What a topic's offsets tell an operator: a consumer group's lag, and how many records arrived
since a moment (so a rate, or the dead letters of the last hour), read from Kafka itself.

:func:`read_offsets` asks the broker once per topic for each partition's end offset, the first
offset at or after each of ``since``'s moments, and the group's committed offsets (an
``OffsetFetch`` only: it never joins the group). The arithmetic on them is pure
(:func:`lag_by_topic`, :func:`records_since`).

The embedded broker (tansu) answers a ``ListOffsets`` for the end of a partition with the first
offset of its last record batch, plus one: a batch of 10 records at offsets 20-29 gives 21, not
30, so the lag would look smaller than it is. A fetch's high watermark is right, so the end of
each non-empty partition is read by fetching its last batch (one small fetch per partition);
against a real Kafka both agree.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition: its ``end`` offset, the group's ``committed`` one (None: none yet), and
    for each moment of ``since`` (seconds ago) the first offset at or after it (None: no record
    since)."""

    topic: str
    partition: int
    end: int
    committed: int | None = None
    since: Mapping[float, int | None] = field(default_factory=dict)


def partition_lag(p: PartitionOffsets) -> int:
    """Records of ``p`` the group has not committed (all of them when it never did)."""
    return max(0, p.end - (p.committed or 0))


def lag_by_topic(partitions: Iterable[PartitionOffsets]) -> dict[str, int]:
    """The group's lag summed per topic."""
    lag: dict[str, int] = {}
    for p in partitions:
        lag[p.topic] = lag.get(p.topic, 0) + partition_lag(p)
    return lag


def records_since(partitions: Iterable[PartitionOffsets], topic: str, ago: float) -> int:
    """Records of ``topic`` that arrived in the last ``ago`` seconds (``ago`` must be one of
    the moments read). At batch granularity on tansu: its offsets for a time are a batch's."""
    total = 0
    for p in partitions:
        if p.topic != topic:
            continue
        first = p.since.get(ago)
        if first is not None:
            total += max(0, p.end - first)
    return total


async def read_offsets(
    bootstrap: str,
    topics: Iterable[str],
    *,
    group: str | None = None,
    since: Mapping[str, Iterable[float]] | None = None,
    prefix: str = "",
    wait: float = 5.0,
    clock: float | None = None,
) -> list[PartitionOffsets]:
    """Every partition of ``topics`` that exists, with ``group``'s committed offsets and, for a
    topic of ``since``, the first offset after each of its moments (seconds before ``clock``,
    the Unix time, now by default); topics named without ``prefix``. Raises ``aiokafka``
    errors, or :class:`TimeoutError` past ``wait`` seconds."""
    now = time.time() if clock is None else clock
    since = since or {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        request_timeout_ms=int(wait * 1000),
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=1 << 20,
    )
    try:
        await asyncio.wait_for(consumer.start(), wait)
        found = await asyncio.wait_for(_read(consumer, list(topics), group, since, now), wait)
    finally:
        await consumer.stop()
    return [replace(p, topic=p.topic.removeprefix(prefix)) for p in found]


async def _read(
    consumer: AIOKafkaConsumer,
    topics: list[str],
    group: str | None,
    since: Mapping[str, Iterable[float]],
    now: float,
) -> list[PartitionOffsets]:
    existing = await consumer.topics()
    tps = [
        TopicPartition(topic, n)
        for topic in topics
        if topic in existing
        for n in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    if not tps:
        return []
    consumer.assign(tps)
    ends = await _end_offsets(consumer, tps)
    committed: dict[TopicPartition, int | None] = {}
    if group is not None:
        for tp in tps:
            committed[tp] = await consumer.committed(tp)
    firsts: dict[tuple[TopicPartition, float], int | None] = {}
    for topic, moments in since.items():
        for ago in moments:
            wanted = {tp: int((now - ago) * 1000) for tp in tps if tp.topic == topic}
            if not wanted:
                continue
            found = await consumer.offsets_for_times(wanted)
            for tp, at in found.items():
                # None, or tansu's offset 0 with timestamp -1: nothing since then.
                firsts[tp, ago] = None if at is None or at.timestamp < 0 else at.offset
    return [
        PartitionOffsets(
            tp.topic,
            tp.partition,
            ends[tp],
            committed.get(tp),
            {ago: firsts[tp, ago] for ago in since.get(tp.topic, ()) if (tp, ago) in firsts},
        )
        for tp in tps
    ]


async def _end_offsets(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The end offsets, corrected by a fetch's high watermark (tansu: see the module)."""
    listed: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    ends = dict(listed)
    pending = [tp for tp in tps if listed[tp] > 0]
    for tp in pending:
        consumer.seek(tp, listed[tp] - 1)
    deadline = time.monotonic() + 2.0
    while pending and time.monotonic() < deadline:
        await consumer.getmany(*pending, timeout_ms=200, max_records=1)
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                ends[tp] = max(ends[tp], highwater)
                pending.remove(tp)
    return ends
