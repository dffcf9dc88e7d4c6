"""The worker's consumer lag, exported as ``hivepipe_consumer_lag{topic}``: on the partitions
this worker holds, the records not yet processed (end offset minus committed offset), summed per
topic. Prometheus sums the workers (``sum by (topic)``); ``hivepipe status`` reads the group's
lag from Kafka itself (:mod:`services.platform.kafka_offsets`)."""

from __future__ import annotations

import logging
from typing import Any

from services.platform import ALL_TOPICS, Settings, kafka_offsets, metrics
from stream.app import HivepipeApp

log = logging.getLogger(__name__)

#: How often the gauge is refreshed (s).
LAG_INTERVAL = 5.0


def assigned_offsets(consumer: Any, prefix: str) -> list[kafka_offsets.PartitionOffsets]:
    """The partitions of hivepipe's topics ``consumer`` (Faust's) holds, their high watermark
    as its last fetch saw it and the offset it last committed; topics named without ``prefix``
    (Faust's own, such as its assignor's, are left out)."""
    # Faust keeps what it committed per partition in ``_committed_offset`` (no public reader).
    committed = getattr(consumer, "_committed_offset", {})
    found = []
    for tp in consumer.assignment():
        if tp.topic.removeprefix(prefix) not in ALL_TOPICS:
            continue
        end = consumer.highwater(tp)
        if end is None:
            continue  # not fetched yet
        found.append(
            kafka_offsets.PartitionOffsets(
                tp.topic.removeprefix(prefix), tp.partition, end, committed.get(tp)
            )
        )
    return found


def register(app: HivepipeApp, settings: Settings) -> None:
    """Register the timer that refreshes ``hivepipe_consumer_lag`` on ``app``."""
    seen: set[str] = set()

    @app.timer(interval=LAG_INTERVAL)  # type: ignore[untyped-decorator]
    async def consumer_lag() -> None:
        try:
            lag = kafka_offsets.lag_by_topic(assigned_offsets(app.consumer, settings.topic_prefix))
        except Exception as exc:  # a rebalance under way: the next tick reads again
            log.debug("consumer lag not read: %r", exc)
            return
        for topic in seen - lag.keys():  # partitions given to another worker
            metrics.CONSUMER_LAG.labels(topic).set(0)
        for topic, records in lag.items():
            metrics.CONSUMER_LAG.labels(topic).set(records)
        seen.update(lag)
