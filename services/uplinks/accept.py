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

from services.devices import DeviceDirectory, device_problem, info_problem
from services.downlinks import requests as downlinks
from services.platform import (
    REQUEST_TIMEOUT,
    DeviceEvent,
    Message,
    Publisher,
    UplinkEnvelope,
    dumps,
    metrics,
)
from services.readings import store_events
from services.uplinks import dedup, journal
from services.uplinks.claims import Claim, ClaimGroups
from services.uplinks.journal import journal_entry

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


def dead_letter_message(key: str, value: dict[str, Any], reason: str) -> Message:
    """The ``dead-letter`` message: the original value plus ``error``."""
    return key, dumps({**value, "error": reason})


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
    keep_journal: bool = True,
    claims: ClaimGroups | None = None,
) -> Accepted:
    """Publish ``envelope`` once per ``dedup_key`` within the window; raises PublishFailed.

    The uplink is journaled with its claim (:mod:`services.uplinks.journal`): a claim is a
    promise only once its uplink is durable, so a process that dies before Kafka has it
    leaves the row for the worker to replay, and the network's retry may be answered as a
    duplicate. ``keep_journal`` (``HIVEPIPE_INTAKE_JOURNAL``): the row stays until the worker
    has stored the uplink (a broker that loses its log loses nothing); False, it is deleted
    once Kafka has acknowledged (a replicated Kafka cluster keeps it from there).

    With a ``dead_letter_topic``, the uplink of an unknown or deactivated device goes there
    instead (still deduplicated, still answered as accepted); the device is checked in the
    claim's own statement, so a callback costs one database round trip; with ``claims``
    (which must journal as ``keep_journal`` says) that statement is shared with the
    concurrent callbacks' (:mod:`services.uplinks.claims`).
    Database errors propagate (psycopg.Error): the caller answers 503.
    """
    metrics.UPLINKS_RECEIVED.labels(envelope.source).inc()
    problem: str | None = None
    entry = journal_entry(envelope)
    if claims is not None and dead_letter_topic is not None:
        claimed, active = await claims.claim(Claim(dedup_key, envelope.device, entry))
        if not claimed:
            metrics.UPLINKS_DUPLICATE.labels(envelope.source).inc()
            async with pool.connection(timeout=DB_TIMEOUT) as conn:
                return Accepted(True, await dedup.previous_response(conn, dedup_key))
        problem = device_problem(active)
    else:
        async with pool.connection(timeout=DB_TIMEOUT) as conn:
            if dead_letter_topic is None:
                claimed = await dedup.claim(
                    conn, dedup_key, window_seconds, entry=entry, durable=keep_journal
                )
            else:
                claimed, active = await dedup.claim_checking_device(
                    conn,
                    dedup_key,
                    window_seconds,
                    envelope.device,
                    entry=entry,
                    durable=keep_journal,
                )
                if claimed:
                    problem = device_problem(active)
            if not claimed:
                metrics.UPLINKS_DUPLICATE.labels(envelope.source).inc()
                return Accepted(True, await dedup.previous_response(conn, dedup_key))
    started = time.perf_counter()
    try:
        if problem is None:
            await publisher.publish(topic, [entry[1]])
        else:
            assert dead_letter_topic is not None
            message = dead_letter_message(envelope.device, envelope_fields(envelope), problem)
            await publisher.publish(dead_letter_topic, [message])
    except Exception:
        await _release(pool, dedup_key, entry[0])
        metrics.UPLINKS_REJECTED.labels(envelope.source, "kafka_unavailable").inc()
        raise
    metrics.PUBLISH_SECONDS.labels(envelope.source).observe(time.perf_counter() - started)
    if problem is not None:
        metrics.UPLINKS_REJECTED.labels(envelope.source, problem).inc()
        metrics.DEAD_LETTERS.labels(problem).inc()
    elif not keep_journal:
        await _forget(pool, entry[0])
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
            infos = await directory.lookup(conn, {event.device})  # cached
            problem = info_problem(infos.get(event.device))
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


async def _release(pool: Pool, dedup_key: str, journal_id: str | None = None) -> None:
    # If the database is gone too, the claim stays until the window ends, and so does its
    # journal row: the worker replays the uplink. Logged, not hidden.
    try:
        async with pool.connection(timeout=DB_TIMEOUT) as conn:
            await dedup.release(conn, dedup_key, journal_id)
    except Exception:
        log.exception("could not release the dedup claim %s", dedup_key)


async def _forget(pool: Pool, journal_id: str) -> None:
    # Kafka has it (a durable cluster): the journal row has done its job. If the database is
    # gone now, the row stays and the uplink is replayed once: a duplicate the sinks absorb.
    try:
        async with pool.connection(timeout=DB_TIMEOUT) as conn:
            await journal.forget(conn, [journal_id])
    except Exception:
        log.warning("could not clear the journal row %s; it is replayed later", journal_id)
