"""A transactional outbox in PostgreSQL: Kafka messages written with the state they describe.

A writer adds rows inside its own transaction (:func:`add`), so a message exists if and only if
its change was committed, and the writer never waits for Kafka. A relay (:func:`drain`, run by
:class:`OutboxRelay` in the API and by a timer in the worker) publishes the oldest rows, waits for
Kafka's acknowledgement and only then deletes them: at-least-once, a duplicate at worst (after a
crash between the acknowledgement and the commit), which the consumers' idempotent sinks absorb.
Several relays share the table with ``FOR UPDATE SKIP LOCKED``; within one drain, rows go out
in the order they were written.

Schema: ``services/platform/migrations/0006_outbox.sql``. Topics are stored without the
deployment's prefix and resolved at publication.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Counter
from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from services.platform.events import DeviceEvent, dumps
from services.platform.kafka import Message, Publisher

__all__ = ["OutboxRelay", "add", "add_events", "drain", "event_message"]

log = logging.getLogger(__name__)

Conn = AsyncConnection[Any]
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]

PUBLISHED = Counter(
    "hivepipe_outbox_published_total", "Outbox messages published on Kafka", ["topic"]
)
FAILURES = Counter(
    "hivepipe_outbox_publish_failures_total",
    "Outbox drains that failed (the messages stay and are retried)",
)

#: Rows published per Kafka round trip.
BATCH = 500


def event_message(event: DeviceEvent) -> Message:
    """The ``device-events`` message of an event (key = device, so per-device order holds)."""
    return event.device, dumps(event.to_dict())


async def add(conn: Conn, topic: str, messages: Sequence[Message]) -> int:
    """Add messages for ``topic`` (unprefixed name) in the caller's transaction."""
    if not messages:
        return 0
    await conn.execute(
        "INSERT INTO kafka_outbox (topic, key, value)"
        " SELECT %s, k, v FROM unnest(%s::text[], %s::bytea[]) WITH ORDINALITY AS m(k, v, n)"
        " ORDER BY n",
        (topic, [key for key, _ in messages], [value for _, value in messages]),
    )
    return len(messages)


async def add_events(conn: Conn, topic: str, events: Sequence[DeviceEvent]) -> int:
    """Add device events for ``topic`` (``device-events``) in the caller's transaction."""
    return await add(conn, topic, [event_message(e) for e in events])


async def _drain_batch(
    pool: Pool, publisher: Publisher, topic: Callable[[str], str], limit: int
) -> int:
    async with pool.connection() as conn, conn.transaction():
        # Losing this commit in a crash only publishes the rows again (at-least-once); waiting
        # for its WAL flush would delay the commits that matter (a downlink answer's).
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "SELECT id, topic, key, value FROM kafka_outbox ORDER BY id LIMIT %s"
                " FOR UPDATE SKIP LOCKED",
                (limit,),
            )
            rows = await cur.fetchall()
        if not rows:
            return 0
        # Consecutive rows of one topic go in one batch, so the written order is kept.
        batches: list[tuple[str, list[Message]]] = []
        for _, name, key, value in rows:
            if not batches or batches[-1][0] != name:
                batches.append((name, []))
            batches[-1][1].append((key, bytes(value)))
        await publisher.publish_many([(topic(name), messages) for name, messages in batches])
        await conn.execute("DELETE FROM kafka_outbox WHERE id = ANY(%s)", ([r[0] for r in rows],))
    for name, messages in batches:
        PUBLISHED.labels(name).inc(len(messages))
    return len(rows)


async def drain(
    pool: Pool, publisher: Publisher, topic: Callable[[str], str], *, limit: int = BATCH
) -> int:
    """Publish and delete every row not locked by another relay; returns how many.

    Raises what the publisher or the database raises (``PublishFailed``, ``psycopg.Error``):
    the rows of the failed batch stay for the next drain.
    """
    total = 0
    while True:
        done = await _drain_batch(pool, publisher, topic, limit)
        total += done
        if done < limit:
            return total


class OutboxRelay:
    """Drains the outbox in the background: at start (leftovers), whenever :meth:`wake` is
    called (after a commit that added rows), and every ``poll`` seconds (rows of other
    processes). Failures are logged and counted, then retried with a growing pause."""

    def __init__(
        self,
        pool: Pool,
        publisher: Publisher,
        topic: Callable[[str], str],
        *,
        poll: float = 1.0,
        max_pause: float = 5.0,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._topic = topic
        self._poll = poll
        self._max_pause = max_pause
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Ask for a drain now (cheap; call it after committing outbox rows)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, *, final_drain_timeout: float = 5.0) -> None:
        """Stop the loop, then publish what is left (best effort, bounded)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with asyncio.timeout(final_drain_timeout):
                await drain(self._pool, self._publisher, self._topic)
        except Exception as exc:
            log.warning("outbox not drained at shutdown; a relay publishes it later: %r", exc)

    async def _run(self) -> None:
        pause = 0.1
        while True:
            self._wake.clear()
            try:
                await drain(self._pool, self._publisher, self._topic)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                FAILURES.inc()
                log.warning("outbox drain failed, retrying in %.1fs: %r", pause, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._max_pause)
                continue
            pause = 0.1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
