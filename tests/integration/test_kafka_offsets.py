"""services.platform.kafka_offsets against the suite's broker (the embedded tansu unless
HIVEPIPE_TEST_KAFKA names another): a group's lag and the records of the last minute, including
when a record batch holds several records (tansu then lists the end of a partition as its last
batch's first offset plus one; the reader takes a fetch's high watermark instead)."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.platform import ensure_topics
from services.platform.kafka_offsets import lag_by_topic, read_offsets, records_since


async def test_lag_and_recent_records_of_batched_topics(kafka_server: str) -> None:
    prefix = f"o{uuid.uuid4().hex[:8]}."
    topic, group = f"{prefix}uplinks", f"{prefix}worker"
    await ensure_topics(kafka_server, [topic], 2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_server, linger_ms=50)
    await producer.start()
    try:
        for _ in range(3):  # three batches of 10 records each on partition 0
            sent = [await producer.send(topic, b"x", partition=0) for _ in range(10)]
            await asyncio.gather(*sent)
        await (await producer.send(topic, b"y", partition=1))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_server, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): 12})
    finally:
        await consumer.stop()

    found = await read_offsets(
        kafka_server,
        [topic, f"{prefix}absent"],
        group=group,
        since={topic: [60.0]},
        prefix=prefix,
    )
    ends = {p.partition: p.end for p in found}
    assert ends == {0: 30, 1: 1}
    assert {p.partition: p.committed for p in found} == {0: 12, 1: None}
    assert lag_by_topic(p for p in found if p.committed is not None) == {"uplinks": 18}
    assert records_since(found, "uplinks", 60.0) == 31
