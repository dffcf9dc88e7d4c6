"""The decode agent's reading of raw messages: nothing unreadable is dropped silently."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pytest

from services.platform.events import UplinkEnvelope, dumps
from services.platform.settings import Settings
from stream.app import Worker
from stream.uplinks import read_envelopes
from stream.worker import create_app


def test_unreadable_values_become_dead_letters() -> None:
    good = UplinkEnvelope(source="sigfox", device="1A", received=1.0, payload_hex="01")
    envelopes, bad = read_envelopes([dumps(good.to_dict()), b"{not json", b'{"id": 1}'])
    assert envelopes == [good]
    assert len(bad) == 2
    first = orjson.loads(bad[0][1])
    assert first["raw"] == "{not json"
    assert first["error"].startswith("unreadable")


def test_worker_logging_keeps_the_level(tmp_path: Path) -> None:
    """At WARNING, Faust's spinner would set the root logger to DEBUG (a record per message)."""
    settings = Settings(embedded=True, database_url="-", kafka="127.0.0.1:9", data_dir=tmp_path)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        worker = Worker(create_app(settings), loglevel="warning", quiet=True)
        worker._setup_logging()
        assert root.level == logging.WARNING
        assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
        assert worker.spinner is None
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_the_lean_monitor_keeps_only_what_faust_reads() -> None:
    from faust.types import TP

    from stream.monitor import LeanMonitor

    monitor = LeanMonitor()
    tp = TP("hivepipe.uplinks", 0)
    for offset in range(3):
        monitor.on_message_in(tp, offset, object())
        state = monitor.on_stream_event_in(tp, offset, object(), object())
        monitor.on_stream_event_out(tp, offset, object(), object(), state)
        monitor.on_message_out(tp, offset, object())
    # Faust's consumer reads this to warn about a stalled stream; the statistics stay empty.
    assert tp in monitor.stream_inbound_time
    assert monitor.events_total == 0
    assert monitor.messages_received_total == 0
    assert not monitor.events_runtime


def test_a_worker_without_tables_starts_its_tables_without_fausts_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust's table manager sleeps 1 s at its start before the consumer may subscribe; the
    worker declares no table, so its manager starts at once (and still starts the recovery,
    which seeks each assigned partition to its committed offset)."""
    from stream.app import Tables

    settings = Settings(embedded=True, database_url="-", kafka="127.0.0.1:9", data_dir=tmp_path)
    tables = create_app(settings).tables
    assert isinstance(tables, Tables)
    assert len(tables) == 0
    calls: list[str] = []

    async def sleep(seconds: float) -> None:
        calls.append(f"sleep {seconds}")

    async def update_channels() -> None:
        calls.append("channels")

    async def recovery_start() -> None:
        calls.append("recovery")

    monkeypatch.setattr(tables, "sleep", sleep)
    monkeypatch.setattr(tables, "_update_channels", update_channels)
    monkeypatch.setattr(tables.recovery, "start", recovery_start)
    asyncio.run(tables.on_start())
    assert calls == ["channels", "recovery"]
