"""``hivepipe status`` without servers: the figures it combines from fake sources, the tables it
prints, the supervisor's process table, the offsets arithmetic, and the metrics added for the
dashboard (consumer lag, callback latency). ``tests/e2e/test_status_e2e.py`` runs the command
against ``hivepipe up``."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from rich.console import Console

from ingest.http import CallbackTiming
from services.entrypoints.process_table import (
    ProcessRow,
    ProcessTable,
    ProcessTableFile,
    read_table,
)
from services.entrypoints.status import Status, StatusReader, counter_total
from services.entrypoints.status_view import render
from services.entrypoints.supervised import Supervised
from services.platform import metrics
from services.platform.kafka_offsets import PartitionOffsets, lag_by_topic, records_since
from services.webhooks import RetryBacklog
from stream.lag import assigned_offsets

TABLE = ProcessTable(
    supervisor_pid=os.getpid(),
    started=0.0,
    processes=(
        ProcessRow("worker-1", "worker", 101, 0, False, 9100),
        ProcessRow("worker-2", "worker", 102, 3, True, 9101),
        ProcessRow("mqtt-1", "mqtt", 103, 0, False, 9200),
        ProcessRow("api-1", "api", 104, 1, False),
        ProcessRow("api-2", "api", None, 2, False),
        ProcessRow("kafka", "kafka", 105, 0, False),
    ),
)

OFFSETS = [
    PartitionOffsets("uplinks", 0, 120, 100, {60.0: 60}),
    PartitionOffsets("uplinks", 1, 50, 50, {60.0: None}),
    PartitionOffsets("readings", 0, 30, 25),
    PartitionOffsets("readings", 1, 7, None),  # never committed: not the group's
    PartitionOffsets("dead-letter", 0, 9, None, {3600.0: 4}),
    PartitionOffsets("commands", 0, 5, None),
]


@dataclass
class FakeSources:
    table: ProcessTable | None = TABLE
    offsets_error: Exception | None = None
    backlog: RetryBacklog = field(default_factory=lambda: RetryBacklog(12, 5, 42.0))
    #: Successive values of each port's counter.
    counters: dict[int, list[float]] = field(
        default_factory=lambda: {9100: [100.0, 130.0, 10.0], 9101: [0.0, 20.0, 40.0]}
    )

    def processes(self) -> ProcessTable | None:
        return self.table

    async def offsets(self) -> list[PartitionOffsets]:
        if self.offsets_error is not None:
            raise self.offsets_error
        return OFFSETS

    async def webhook_backlog(self) -> RetryBacklog:
        return self.backlog

    def counter(self, port: int, name: str) -> float:
        assert name == "hivepipe_points_stored_total"
        return self.counters[port].pop(0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_status_combines_the_sources() -> None:
    clock = FakeClock()
    reader = StatusReader(FakeSources(), window=2.0, clock=clock, sleep=clock.sleep)
    status = await reader.read()
    assert status.processes == TABLE
    assert status.lag == {"uplinks": 20, "readings": 5}  # only what the group committed
    assert status.uplinks_per_second == pytest.approx(60 / 60)
    assert status.dead_letters_last_hour == 5
    assert status.webhook_backlog == RetryBacklog(12, 5, 42.0)
    # Two readings 2 s apart: (130 - 100) + (20 - 0) points in 2 s.
    assert clock.slept == [2.0]
    assert status.points_per_second == pytest.approx(25.0)
    assert status.problems == ()


async def test_under_watch_the_rate_is_since_the_previous_reading() -> None:
    clock = FakeClock()
    reader = StatusReader(FakeSources(), window=2.0, clock=clock, sleep=clock.sleep)
    await reader.read()
    clock.now += 5.0
    status = await reader.read()
    assert clock.slept == [2.0]  # no second wait
    # worker-1 restarted (130 -> 10: counts from zero), worker-2 went 20 -> 40.
    assert status.points_per_second == pytest.approx((10 + 20) / 5.0)


async def test_a_source_that_fails_leaves_the_others() -> None:
    sources = FakeSources(offsets_error=ConnectionError("broker down"), table=None)
    status = await StatusReader(sources).read()
    assert status.lag is None
    assert status.uplinks_per_second is None
    assert status.dead_letters_last_hour is None
    assert status.points_per_second is None  # no worker known without hivepipe up
    assert status.webhook_backlog is not None
    assert any("Kafka: broker down" in p for p in status.problems)
    assert any("no `hivepipe up`" in p for p in status.problems)


async def test_a_stopped_supervisor_is_reported() -> None:
    stopped = ProcessTable(2**22 + 12345, 0.0, TABLE.processes, running=False)
    status = await StatusReader(FakeSources(table=stopped)).read()
    assert status.points_per_second is None
    assert any("is not running" in p for p in status.problems)
    text = printed(status)
    assert "unknown (hivepipe up stopped)" in text


def printed(status: Status) -> str:
    console = Console(record=True, width=140, color_system=None)
    console.print(render(status))
    return console.export_text()


async def test_the_tables_show_roles_processes_and_figures() -> None:
    clock = FakeClock()
    reader = StatusReader(FakeSources(), clock=clock, sleep=clock.sleep)
    text = printed(await reader.read())
    for expected in ("worker-2", "crash-looping", "restarting", "api-1", "kafka"):
        assert expected in text
    worker_2 = next(line for line in text.splitlines() if "worker-2" in line)
    assert [cell.strip() for cell in worker_2.split("│")[1:-1]] == [
        "worker",
        "worker-2",
        "102",
        "3",
        "crash-looping",
    ]
    assert "consumer lag: uplinks" in text
    assert "20" in text
    assert "12 points (5 due, oldest 42 s)" in text
    assert "dead letters (last hour)" in text


def test_missing_figures_are_shown_as_such() -> None:
    text = printed(Status(problems=("Kafka: no address",)))
    assert text.count("n/a") >= 4
    assert "! Kafka: no address" in text


def test_lag_and_records_since() -> None:
    assert lag_by_topic(OFFSETS) == {
        "uplinks": 20,
        "readings": 5 + 7,
        "dead-letter": 9,
        "commands": 5,
    }
    assert records_since(OFFSETS, "uplinks", 60.0) == 60
    assert records_since(OFFSETS, "dead-letter", 3600.0) == 5
    assert records_since(OFFSETS, "readings", 60.0) == 0


def test_counter_total_reads_prometheus_text() -> None:
    text = (
        "# HELP hivepipe_points_stored_total Data points stored\n"
        "# TYPE hivepipe_points_stored_total counter\n"
        "hivepipe_points_stored_total 42.0\n"
        "hivepipe_points_stored_created 1.7e9\n"
    )
    assert counter_total(text, "hivepipe_points_stored_total") == 42.0


class _Running:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code

    def stop(self) -> None:
        self.code = 0

    def kill(self) -> None:
        self.code = -9


def test_the_supervisor_writes_its_process_table(tmp_path: Path) -> None:
    worker = Supervised("worker-1", "worker", lambda: _Running(4242), metrics_port=9100)
    server = Supervised("postgres", "postgres", lambda: _Running(77), running=_Running(77))
    table = ProcessTableFile(tmp_path, started=123.0)
    table.update([server, worker])
    read = read_table(tmp_path)
    assert read == ProcessTable(
        os.getpid(),
        123.0,
        (
            ProcessRow("postgres", "postgres", 77, 0, False, None),
            ProcessRow("worker-1", "worker", 4242, 0, False, 9100),
        ),
        running=True,
    )
    written = table.path.stat().st_mtime_ns
    table.update([server, worker])  # nothing changed: not written again
    assert table.path.stat().st_mtime_ns == written
    assert worker.process is not None
    worker.process.kill()
    worker.check()  # exited: its restart is pending
    table.update([server, worker])
    rows = {row.name: row for row in read_table(tmp_path).processes}  # type: ignore[union-attr]
    assert rows["worker-1"].pid is None
    table.remove()
    assert read_table(tmp_path) is None


def test_a_table_left_by_a_killed_supervisor_says_it_is_not_running(tmp_path: Path) -> None:
    ProcessTableFile(tmp_path).update([])
    text = (tmp_path / "processes.json").read_text()
    (tmp_path / "processes.json").write_text(
        text.replace(f'"supervisor_pid": {os.getpid()}', '"supervisor_pid": 4194000')
    )
    table = read_table(tmp_path)
    assert table is not None
    assert not table.running


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class FakeFaustConsumer:
    def __init__(self) -> None:
        self.tps = {
            TP("hivepipe.uplinks", 0): (50, 40),
            TP("hivepipe.uplinks", 1): (10, None),
            TP("hivepipe.readings", 0): (None, None),  # not fetched yet
            TP("hivepipe.worker-__assignor-__leader", 0): (3, 0),  # Faust's own
        }
        self._committed_offset = {tp: c for tp, (_, c) in self.tps.items()}

    def assignment(self) -> set[TP]:
        return set(self.tps)

    def highwater(self, tp: TP) -> int | None:
        return self.tps[tp][0]


def test_a_worker_reads_its_lag_from_its_consumer() -> None:
    offsets = assigned_offsets(FakeFaustConsumer(), "hivepipe.")
    assert lag_by_topic(offsets) == {"uplinks": 10 + 10}


def test_metrics_on_a_taken_port_do_not_stop_the_process() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert metrics.serve(taken.getsockname()[1], "127.0.0.1") is False


def _observed(network: str) -> float:
    value = REGISTRY.get_sample_value("hivepipe_callback_seconds_count", {"network": network})
    return value or 0.0


async def test_callback_timing_observes_the_callbacks_only() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    timing = CallbackTiming(app)
    before = _observed("chirpstack")
    await timing({"type": "http", "path": "/callbacks/chirpstack"}, receive, send)
    await timing({"type": "http", "path": "/v1/devices"}, receive, send)
    assert _observed("chirpstack") == before + 1
    assert len(sent) == 4
