"""The decode agent's reading of raw messages: nothing unreadable is dropped silently."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson

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
