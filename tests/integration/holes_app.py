"""A Faust app on hivepipe's transport whose consumer is handed a partition with holes, as tansu
hands them when it makes a batch visible late (``services/platform/offset_holes.py``).

``python -m tests.integration.holes_app BOOTSTRAP TOPIC COUNT LATE GONE`` reads TOPIC (one
partition, records at offsets 0 to COUNT - 1) with an agent. The first time the records at the
comma-separated offsets LATE are fetched, they are kept from the consumer (a batch made visible
late); those at GONE always are (a real gap). Once every other value has arrived, or after
30 s, it prints one JSON line (the values seen, the holes filled and kept) and exits. Run by
``test_consumer_holes_tansu.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import mode.loop
import orjson
from prometheus_client import REGISTRY

from stream import transport
from stream.app import HivepipeApp, Worker


def main() -> None:
    bootstrap, topic_name, count, late_arg, gone_arg = sys.argv[1:6]
    late = {int(offset) for offset in late_arg.split(",")}
    gone = {int(offset) for offset in gone_arg.split(",")}
    wanted = int(count) - len(gone)
    held_back: set[int] = set()
    getmany = transport._Consumer.getmany

    async def faulty(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        async for tp, message in getmany(self, timeout):
            if tp.topic == topic_name and message.offset in gone:
                continue
            if tp.topic == topic_name and message.offset in late - held_back:
                held_back.add(message.offset)  # not visible yet, this once
                continue
            yield tp, message

    transport._Consumer.getmany = faulty  # type: ignore[method-assign]
    mode.loop.use("uvloop")
    app = HivepipeApp(
        "holes-test",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="hivepipe-holes-"),
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        broker_session_timeout=2.0,
        broker_rebalance_timeout=2.0,
        broker_heartbeat_interval=0.5,
    )
    app.fetch_max_wait_ms = 50
    seen: list[str] = []

    def report() -> None:
        def holes(outcome: str) -> float:
            labels = {"outcome": outcome}
            return REGISTRY.get_sample_value("hivepipe_consumer_offset_holes_total", labels) or 0

        line = {
            "seen": seen,
            "filled": holes("filled"),
            "kept": holes("kept"),
            "late": sorted(held_back),
        }
        os.write(1, orjson.dumps(line) + b"\n")  # Faust redirects sys.stdout to its log
        os._exit(0)

    @app.agent(app.topic(topic_name, value_serializer="raw", key_serializer="raw"))
    async def read(stream: Any) -> None:
        async for value in stream:
            seen.append(value.decode())
            if len(set(seen)) >= wanted:
                report()

    @app.timer(interval=30.0)  # type: ignore[untyped-decorator]
    async def give_up() -> None:
        report()

    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
