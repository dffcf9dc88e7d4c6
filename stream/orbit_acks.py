"""The Orbit ack agent: parameter acks from ``device-events`` applied in PostgreSQL.

It consumes ``device-events`` (key = device: one device's events stay in order) and acts on
``param_ack`` only, so the events it causes (``param_acked``, ``param_requeued``...) are never
taken for input. The configuration lives in PostgreSQL, not in a Faust table. What the agent
changes and its events are committed together (the events through the outbox), which it then
publishes; a timer publishes what any process left in the outbox.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.orbit import MAX_SIGFOX_SEQ, Ack, UnknownDevice, changes
from services.platform import (
    TOPIC_DEVICE_EVENTS,
    Publisher,
    Settings,
    loads,
    outbox,
)
from stream.app import HivepipeApp
from stream.batching import take_bursts
from stream.retry import retry_forever

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]

#: Seconds between two looks at the outbox for rows another process could not publish.
OUTBOX_POLL = 1.0


def _int(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{value!r} is not an integer in {low}..{high}")
    return value


def parse_ack(event: dict[str, Any]) -> Ack:
    """The :class:`Ack` of a ``param_ack`` event; ValueError when a field is missing or wrong.

    ``uplink_seq`` (the Sigfox seqNumber the decode step adds) is required: without it an ack
    cannot be applied idempotently, and a replayed old ack would set old values again.
    """
    try:
        when = float(event["time"])
        if not math.isfinite(when):
            raise ValueError(f"time {when!r}")
        return Ack(
            device=str(event["device"]).upper(),
            time=when,
            seq=_int(event["seq"], 0, 255),
            params=tuple(
                (_int(p["id"], 0, 255), _int(p["raw"], -(2**15), 2**16 - 1))
                for p in event["params"]
            ),
            uplink_seq=_int(event["uplink_seq"], 0, MAX_SIGFOX_SEQ),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed param_ack: {exc!r}") from exc


def read_acks(values: list[bytes]) -> list[Ack]:
    """The parameter acks among raw ``device-events`` values, in order; the rest is skipped.

    An unusable ``param_ack`` is logged and skipped: its update stays in flight, times out and
    is sent again, and the device acks again.
    """
    acks: list[Ack] = []
    for raw in values:
        try:
            event = loads(raw)
        except Exception as exc:  # not ours to judge: the topic's other consumers see it too
            log.debug("unreadable device event skipped: %r", exc)
            continue
        if not isinstance(event, dict) or event.get("type") != "param_ack":
            continue
        try:
            acks.append(parse_ack(event))
        except ValueError as exc:
            log.warning("Orbit ack of %r skipped: %s", event.get("device"), exc)
    return acks


async def apply_acks(pool: Pool, acks: list[Ack]) -> int:
    """Apply acks in order (each in its own transaction, idempotent); returns the outcomes."""
    produced = 0
    async with pool.connection() as conn:
        for ack in acks:
            try:
                produced += len(await changes.apply_ack(conn, ack))
            except UnknownDevice as exc:
                log.info("Orbit ack skipped: %s", exc)
    return produced


async def publish_outbox(pool: Pool, publisher: Publisher, settings: Settings) -> None:
    """Publish the outbox now; on failure the rows stay for the next try (here or elsewhere)."""
    try:
        await outbox.drain(pool, publisher, settings.topic)
    except Exception as exc:
        outbox.FAILURES.inc()
        log.warning("outbox not published, retried later: %r", exc)


def register(app: HivepipeApp, settings: Settings) -> None:
    """Register the Orbit ack agent and the outbox timer on ``app``."""
    events = app.topic(
        settings.topic(TOPIC_DEVICE_EVENTS), value_serializer="raw", key_serializer="raw"
    )

    async def open_resources() -> tuple[Pool, Publisher]:
        # A restarted empty broker must not swallow what the outbox held.
        return await app.resources.open_repairing()

    @app.agent(events, name="orbit-acks")
    async def orbit_acks(stream: Any) -> None:

        pool, publisher = await open_resources()
        async for values in take_bursts(
            stream, settings.batch_size, within=settings.flush_interval, quiet=settings.flush_quiet
        ):
            acks = read_acks(values)
            if not acks:
                continue
            await retry_forever("applying Orbit acks", lambda batch=acks: apply_acks(pool, batch))
            await publish_outbox(pool, publisher, settings)

    @app.timer(interval=OUTBOX_POLL)  # type: ignore[untyped-decorator]
    async def orbit_outbox() -> None:
        try:
            pool, publisher = await open_resources()
        except Exception as exc:  # the database or Kafka away: the next tick tries again
            log.warning("outbox timer cannot open its resources: %r", exc)
            return
        await publish_outbox(pool, publisher, settings)
