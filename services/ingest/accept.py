"""Accepting an uplink: deduplicate (shared, in PostgreSQL), then publish and wait for Kafka.

Nothing is lost: when Kafka does not acknowledge, the claim is released and the caller answers
503, so the network's retry is accepted as new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services import metrics
from services.events import UplinkEnvelope, dumps
from services.ingest import dedup
from services.kafka import Publisher

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Accepted:
    """``duplicate`` is True when the uplink had been seen within the window."""

    duplicate: bool
    previous_response: Any = None


async def accept_uplink(
    envelope: UplinkEnvelope,
    *,
    dedup_key: str,
    pool: AsyncConnectionPool[AsyncConnection[Row]],
    publisher: Publisher,
    topic: str,
    window_seconds: int,
) -> Accepted:
    """Publish ``envelope`` once per ``dedup_key`` within the window; raises PublishFailed."""
    metrics.UPLINKS_RECEIVED.labels(envelope.source).inc()
    async with pool.connection() as conn:
        if not await dedup.claim(conn, dedup_key, window_seconds):
            metrics.UPLINKS_DUPLICATE.labels(envelope.source).inc()
            return Accepted(True, await dedup.previous_response(conn, dedup_key))
    started = time.perf_counter()
    try:
        await publisher.publish(topic, [(envelope.device, dumps(envelope.to_dict()))])
    except Exception:
        async with pool.connection() as conn:
            await dedup.release(conn, dedup_key)
        metrics.UPLINKS_REJECTED.labels(envelope.source, "kafka_unavailable").inc()
        raise
    metrics.PUBLISH_SECONDS.labels(envelope.source).observe(time.perf_counter() - started)
    return Accepted(False)
