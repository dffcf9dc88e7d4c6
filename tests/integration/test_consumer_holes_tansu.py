"""The worker's consumer reads a partition again from a hole in its offsets, on the real broker.

tansu can hand a consumer a partition's later records before an earlier acknowledged batch is
visible (``services/platform/offset_holes.py``). The fault is injected where the consumer
receives its fetch (records at chosen offsets kept back once, as tansu did; one kept back
always, a real gap); the seek back and the fetch again are the real transport's, against the
test broker.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from services.platform import ensure_topics

ROOT = Path(__file__).resolve().parents[2]


async def _fill(bootstrap: str, topic: str, count: int) -> None:
    await ensure_topics(bootstrap, [topic], 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, count, 10):  # batches of several records, as the API's
            sent = [
                await producer.send(topic, str(n).encode(), key=b"k")
                for n in range(start, min(start + 10, count))
            ]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


def test_a_batch_made_visible_late_is_read_again_and_delivered(kafka_server: str) -> None:
    topic = f"holes-{uuid.uuid4().hex[:8]}"
    count = 200
    asyncio.run(_fill(kafka_server, topic, count))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.holes_app",
            kafka_server,
            topic,
            str(count),
            "37,38",
            "150",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report; exit {run.returncode}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    report = orjson.loads(lines[-1])
    assert report["late"] == [37, 38]  # the fault happened
    # Every record but the real gap's, each once: 37 and 38 read again, 150 passed after 2 s.
    assert report["seen"] == [str(n) for n in range(count) if n != 150]
    assert report["filled"] == 1
    assert report["kept"] == 1
