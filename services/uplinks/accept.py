"""Accepting an uplink: deduplicate (shared, in PostgreSQL), then publish and wait for Kafka.

Nothing is lost: when Kafka does not acknowledge, the claim is released and the caller answers
503, so the network's retry is accepted as new. An uplink of a device that is unknown or
deactivated is kept on ``dead-letter`` with the reason instead of ``uplinks``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.devices.registry import DeviceDirectory
from services.downlinks import requests as downlinks
from services.platform import metrics
from services.platform.db import REQUEST_TIMEOUT
from services.platform.events import DeviceEvent, UplinkEnvelope, dumps
from services.platform.kafka import Message, Publisher
from services.platform.topic_repair import (
    TopicRepair as TopicRepair,  # re-exported (stream/orbit_acks.py)
)
from services.readings.device_events import store_events
from services.uplinks import dedup

Row = dict[str, Any]
Pool = AsyncConnectionPool[AsyncConnection[Row]]

log = logging.getLogger(__name__)

#: How long a callback waits for a database connection before answering 503.
DB_TIMEOUT = REQUEST_TIMEOUT


@dataclass(frozen=True, slots=True)
class Accepted:
    """``duplicate`` is True when the uplink had been seen within the window;
    ``dead_letter`` is the reason when it was kept on ``dead-letter`` instead of published."""

    duplicate: bool
    previous_response: Any = None
    dead_letter: str | None = None


async def device_problem(
    conn: AsyncConnection[Row], directory: DeviceDirectory, device: str
) -> str | None:
    """``unknown_device``, ``inactive_device``, or None when the device may send (cached)."""
    info = (await directory.lookup(conn, {device})).get(device)
    if info is None:
        return "unknown_device"
    return None if info.active else "inactive_device"


def dead_letter_message(key: str, value: dict[str, Any], reason: str) -> Message:
    """The ``dead-letter`` message: the original value plus ``error``."""
    return key, dumps({**value, "error": reason})


def envelope_message(envelope: UplinkEnvelope) -> Message:
    """The ``uplinks`` message of an envelope (orjson serialises the dataclass itself: the
    same JSON as ``to_dict()`` without its deep copy, the main cost at high rates)."""
    return envelope.device, dumps(envelope)


def envelope_fields(envelope: UplinkEnvelope) -> dict[str, Any]:
    """The envelope's fields as a dict, without copying the payload."""
    return {f.name: getattr(envelope, f.name) for f in dataclasses.fields(envelope)}


async def accept_uplink(
    envelope: UplinkEnvelope,
    *,
    dedup_key: str,
    pool: Pool,
    publisher: Publisher,
    topic: str,
    window_seconds: int,
    dead_letter_topic: str | None = None,
) -> Accepted:
    """Publish ``envelope`` once per ``dedup_key`` within the window; raises PublishFailed.

    With a ``dead_letter_topic``, the uplink of an unknown or deactivated device goes there
    instead (still deduplicated, still answered as accepted); the device is checked in the
    claim's own statement, so a callback costs one database round trip.
    Database errors propagate (psycopg.Error): the caller answers 503.
    """
    metrics.UPLINKS_RECEIVED.labels(envelope.source).inc()
    problem: str | None = None
    async with pool.connection(timeout=DB_TIMEOUT) as conn:
        if dead_letter_topic is None:
            claimed = await dedup.claim(conn, dedup_key, window_seconds)
        else:
            claimed, active = await dedup.claim_checking_device(
                conn, dedup_key, window_seconds, envelope.device
            )
            if claimed and not active:
                problem = "unknown_device" if active is None else "inactive_device"
        if not claimed:
            metrics.UPLINKS_DUPLICATE.labels(envelope.source).inc()
            return Accepted(True, await dedup.previous_response(conn, dedup_key))
    started = time.perf_counter()
    try:
        if problem is None:
            await publisher.publish(topic, [envelope_message(envelope)])
        else:
            assert dead_letter_topic is not None
            message = dead_letter_message(envelope.device, envelope_fields(envelope), problem)
            await publisher.publish(dead_letter_topic, [message])
    except Exception:
        await _release(pool, dedup_key)
        metrics.UPLINKS_REJECTED.labels(envelope.source, "kafka_unavailable").inc()
        raise
    metrics.PUBLISH_SECONDS.labels(envelope.source).observe(time.perf_counter() - started)
    if problem is not None:
        metrics.UPLINKS_REJECTED.labels(envelope.source, problem).inc()
        metrics.DEAD_LETTERS.labels(problem).inc()
    return Accepted(False, dead_letter=problem)


async def accept_device_event(
    event: DeviceEvent,
    *,
    source: str,
    dedup_key: str,
    pool: Pool,
    publisher: Publisher,
    topic: str,
    dead_letter_topic: str,
    directory: DeviceDirectory,
    window_seconds: int,
) -> Accepted:
    """Store a network's device event (``device_events``) and publish it on ``device-events``;
    a report of a downlink also updates the stored downlink (:func:`downlinks.note_report`).

    Deduplicated like uplinks; an event of an unknown or deactivated device goes to
    ``dead-letter``. On any failure the claim is released and the error propagates.
    """
    problem: str | None = None
    async with pool.connection(timeout=DB_TIMEOUT) as conn:
        if not await dedup.claim(conn, dedup_key, window_seconds):
            metrics.UPLINKS_DUPLICATE.labels(source).inc()
            return Accepted(True)
        try:
            problem = await device_problem(conn, directory, event.device)
            if problem is None:
                await store_events(conn, [(event, dedup_key)])
                await downlinks.note_report(conn, event)
        except BaseException:
            await dedup.release(conn, dedup_key)
            raise
    try:
        if problem is None:
            await publisher.publish(topic, [(event.device, dumps(event.to_dict()))])
        else:
            message = dead_letter_message(event.device, event.to_dict(), problem)
            await publisher.publish(dead_letter_topic, [message])
    except Exception:
        await _release(pool, dedup_key)
        metrics.UPLINKS_REJECTED.labels(source, "kafka_unavailable").inc()
        raise
    if problem is not None:
        metrics.UPLINKS_REJECTED.labels(source, problem).inc()
        metrics.DEAD_LETTERS.labels(problem).inc()
    return Accepted(False, dead_letter=problem)


async def _release(pool: Pool, dedup_key: str) -> None:
    # If the database is gone too, the claim stays until the window ends: logged, not hidden.
    try:
        async with pool.connection(timeout=DB_TIMEOUT) as conn:
            await dedup.release(conn, dedup_key)
    except Exception:
        log.exception("could not release the dedup claim %s", dedup_key)
