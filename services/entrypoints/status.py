"""What ``hivepipe status`` reports, gathered from where each fact lives.

- the processes of ``hivepipe up`` and their restarts: its ``processes.json``
  (:mod:`services.entrypoints.process_table`);
- the worker group's lag per topic, the uplinks of the last minute and the dead letters of the
  last hour: Kafka's offsets (:mod:`services.platform.kafka_offsets`);
- the points stored per second: the workers' ``hivepipe_points_stored_total``, read twice
  (``window`` seconds apart, or since the previous reading under ``--watch``);
- the webhook retry backlog: PostgreSQL (:func:`services.webhooks.retry_backlog`).

Each source sits behind :class:`Sources`; :class:`StatusReader` only combines them, so it is
tested with a fake. A source that fails leaves its figures empty and adds a line to
:attr:`Status.problems`: the rest is still shown.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from services.entrypoints.process_table import ProcessTable, read_table
from services.platform import (
    ALL_TOPICS,
    TOPIC_DEAD_LETTER,
    TOPIC_UPLINKS,
    Settings,
    kafka_offsets,
)
from services.webhooks import RetryBacklog, retry_backlog

#: The window of the uplinks rate, and of the dead letters (s).
UPLINKS_WINDOW = 60.0
DEAD_LETTERS_WINDOW = 3600.0
POINTS_STORED = "hivepipe_points_stored_total"


@dataclass(frozen=True, slots=True)
class Status:
    """One reading. A figure is None when its source could not be read (see ``problems``)."""

    processes: ProcessTable | None = None
    lag: Mapping[str, int] | None = None
    uplinks_per_second: float | None = None
    points_per_second: float | None = None
    webhook_backlog: RetryBacklog | None = None
    dead_letters_last_hour: int | None = None
    problems: tuple[str, ...] = ()


class Sources(Protocol):
    """Where the figures come from (:class:`LiveSources`, or a fake in tests)."""

    def processes(self) -> ProcessTable | None: ...

    async def offsets(self) -> list[kafka_offsets.PartitionOffsets]: ...

    async def webhook_backlog(self) -> RetryBacklog: ...

    def counter(self, port: int, name: str) -> float:
        """The total of counter ``name`` in the metrics a process serves on ``port``."""


@dataclass
class _Counts:
    at: float
    by_port: dict[int, float] = field(default_factory=dict)


def per_second(before: _Counts, after: _Counts) -> float | None:
    """The rate between two readings of counters, one per process; a counter that went down
    (its process restarted) counts from zero, as Prometheus' ``rate`` does."""
    elapsed = after.at - before.at
    if elapsed <= 0:
        return None
    added = 0.0
    for port, value in after.by_port.items():
        old = before.by_port.get(port)
        added += value if old is None or value < old else value - old
    return added / elapsed


class StatusReader:
    """Reads :class:`Status` from ``sources``; keeps the last counters for the next rate."""

    def __init__(
        self,
        sources: Sources,
        *,
        window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.sources = sources
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._last: _Counts | None = None

    async def read(self) -> Status:
        problems: list[str] = []
        table = self.sources.processes()
        if table is None:
            problems.append("no `hivepipe up` runs with this data directory: no processes")
        elif not table.running:
            problems.append(f"`hivepipe up` (pid {table.supervisor_pid}) is not running")
        lag = uplinks = dead = None
        try:
            partitions = await self.sources.offsets()
        except Exception as exc:
            problems.append(f"Kafka: {_describe(exc)}")
        else:
            lag = kafka_offsets.lag_by_topic(p for p in partitions if p.committed is not None)
            uplinks = kafka_offsets.records_since(partitions, TOPIC_UPLINKS, UPLINKS_WINDOW)
            dead = kafka_offsets.records_since(partitions, TOPIC_DEAD_LETTER, DEAD_LETTERS_WINDOW)
        backlog = None
        try:
            backlog = await self.sources.webhook_backlog()
        except Exception as exc:
            problems.append(f"PostgreSQL: {_describe(exc)}")
        points = await self._points_per_second(table, problems)
        return Status(
            processes=table,
            lag=lag,
            uplinks_per_second=None if uplinks is None else uplinks / UPLINKS_WINDOW,
            points_per_second=points,
            webhook_backlog=backlog,
            dead_letters_last_hour=dead,
            problems=tuple(problems),
        )

    async def _points_per_second(
        self, table: ProcessTable | None, problems: list[str]
    ) -> float | None:
        ports = [
            row.metrics_port
            for row in (table.processes if table is not None and table.running else ())
            if row.role == "worker" and row.metrics_port and row.pid is not None
        ]
        if not ports:
            return None
        if self._last is None:
            self._last = self._count(ports, problems)
            await self._sleep(self.window)
        counts = self._count(ports, problems)
        rate = per_second(self._last, counts)
        self._last = counts
        return rate

    def _count(self, ports: list[int], problems: list[str]) -> _Counts:
        counts = _Counts(self._clock())
        for port in ports:
            try:
                counts.by_port[port] = self.sources.counter(port, POINTS_STORED)
            except OSError as exc:
                problem = f"worker metrics on port {port}: {_describe(exc)}"
                if problem not in problems:
                    problems.append(problem)
        return counts


def _describe(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__


def counter_total(metrics_text: str, name: str) -> float:
    """The sum of the samples of counter ``name`` (with its ``_total``) in Prometheus text."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name
    )


class LiveSources:
    """The real sources of an installation: ``data_dir``, Kafka, PostgreSQL, the processes'
    metrics on ``metrics_host``."""

    def __init__(self, settings: Settings, *, kafka: str | None, database_url: str | None) -> None:
        self.settings = settings
        self.kafka = kafka
        self.database_url = database_url
        host = settings.api_host
        self.metrics_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104

    def processes(self) -> ProcessTable | None:
        return read_table(self.settings.data_dir)

    async def offsets(self) -> list[kafka_offsets.PartitionOffsets]:
        if not self.kafka:
            raise LookupError("no address: set HIVEPIPE_KAFKA, or start `hivepipe up`")
        s = self.settings
        return await kafka_offsets.read_offsets(
            self.kafka,
            [s.topic(t) for t in ALL_TOPICS],
            group=f"{s.topic_prefix}worker",
            since={
                s.topic(TOPIC_UPLINKS): [UPLINKS_WINDOW],
                s.topic(TOPIC_DEAD_LETTER): [DEAD_LETTERS_WINDOW],
            },
            prefix=s.topic_prefix,
        )

    async def webhook_backlog(self) -> RetryBacklog:
        import psycopg
        from psycopg.rows import dict_row

        if not self.database_url:
            raise LookupError("no address: set HIVEPIPE_DATABASE_URL, or start `hivepipe up`")
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True, row_factory=dict_row, connect_timeout=5
        ) as conn:
            return await retry_backlog(conn)

    def counter(self, port: int, name: str) -> float:
        url = f"http://{self.metrics_host}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (http, loopback)
            return counter_total(answer.read().decode(), name)
