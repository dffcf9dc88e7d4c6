"""The intake journal: every accepted uplink is kept in PostgreSQL until it is stored.

A 2xx to a network, a PUBACK to a device, is a promise that the uplink will be stored. Kafka's
acknowledgement keeps that promise only while the broker keeps its log; the embedded broker
(tansu) keeps it in memory. So each accepted uplink is also written here, in the same statement
or transaction as its dedup claim (a claim never exists without its uplink), durably
(``synchronous_commit`` on), and deleted once the worker has stored it (:func:`forget`). What is
still here after a crash, a broker restart or a power cut is published again by the worker
(:func:`replay_due`); the idempotent sinks absorb the copies that had arrived after all.

With ``HIVEPIPE_INTAKE_JOURNAL=false`` (a replicated Kafka cluster, whose acknowledgement is
durable) a row lives only from the claim until Kafka's acknowledgement (:func:`forget` right
after the publish): a crash in between is still replayed, so a claim is never a promise that
nobody keeps.

Schema: ``services/platform/migrations/0009_uplink_journal.sql``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge
from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from services.platform import (
    TOPIC_UPLINKS,
    Message,
    Publisher,
    UplinkEnvelope,
    dumps,
    json_rows,
)

log = logging.getLogger(__name__)

Conn = AsyncConnection[Any]
Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]

REPLAYED = Counter(
    "hivepipe_journal_replayed_total",
    "Accepted uplinks published again from the intake journal (not stored after a fault)",
)
PENDING = Gauge(
    "hivepipe_journal_pending",
    "Accepted uplinks in the intake journal not yet stored (as of the last replay check)",
)

#: Rows published per Kafka round trip when replaying.
REPLAY_BATCH = 500

#: The journal row of a claim, for the claim's own statement (a data-modifying CTE): inserted
#: only when ``claimed`` returned a row and ``%(journal)s`` is true. ``{when}`` adds a condition
#: (the device check). Parameters: ``id``, ``device``, ``value``, ``journal``.
INSERT_CLAIMED = """
INSERT INTO uplink_journal (id, key, value)
SELECT %(id)s, %(device)s, %(value)s FROM claimed WHERE %(journal)s {when}
ON CONFLICT (id) DO NOTHING
"""

#: The journal row ``%(id)s`` deleted, for the statement that releases its claim.
DELETE_ONE = "DELETE FROM uplink_journal WHERE id = %(id)s"


def envelope_message(envelope: UplinkEnvelope) -> Message:
    """The ``uplinks`` message of an envelope (orjson serialises the dataclass itself: the
    same JSON as ``to_dict()`` without its deep copy, the main cost at high rates)."""
    return envelope.device, dumps(envelope)


def journal_entry(envelope: UplinkEnvelope) -> tuple[str, Message]:
    """The journal row of an envelope: its id and its ``uplinks`` message (key, value)."""
    return envelope.id, envelope_message(envelope)


#: The rows as one JSON parameter (``json_rows``): ``[id, key, value]`` each, the value (a
#: message of ``dumps``, always UTF-8 JSON) as a string, written back as the same bytes.
_RECORD = (
    "INSERT INTO uplink_journal (id, key, value)"
    " SELECT r->>0, r->>1, convert_to(r->>2, 'UTF8') FROM json_array_elements(%s::json) r"
    " ON CONFLICT (id) DO NOTHING"
)


async def record(conn: Conn, entries: Sequence[tuple[str, Message]]) -> None:
    """Journal ``entries`` (id, (key, value)) in the caller's transaction; ids already there
    are left as they are."""
    if not entries:
        return
    rows = [(id_, key, value.decode()) for id_, (key, value) in entries]
    await conn.execute(_RECORD, (json_rows(rows),))


#: The ids as one JSON parameter (``json_rows``), made an array in PostgreSQL: the same plan
#: as ``= ANY(%s)``, without psycopg's per-element dump.
_FORGET = (
    "DELETE FROM uplink_journal WHERE id = ANY(ARRAY(SELECT json_array_elements_text(%s::json)))"
)


async def forget(conn: Conn, ids: Sequence[str], *, in_transaction: bool = False) -> None:
    """Delete the rows of uplinks now safe (stored, or acknowledged by a durable Kafka).

    On its own, committed without waiting for the WAL flush: losing this delete in a crash
    only replays an uplink already stored, which the sinks absorb. ``in_transaction``: part
    of the caller's transaction (the worker's store of the same uplinks), whose commit mode
    it leaves alone."""
    if not ids:
        return
    if in_transaction:
        await conn.execute(_FORGET, (json_rows(list(ids)),))
        return
    await conn.execute(
        "DELETE FROM uplink_journal"
        " USING (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
        " WHERE id = ANY(ARRAY(SELECT json_array_elements_text(%s::json)))",
        (json_rows(list(ids)),),
    )


async def _replay_batch(
    pool: Pool, publisher: Publisher, topic: str, cutoff: datetime, limit: int
) -> int:
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(
                "SELECT id, key, value FROM uplink_journal WHERE accepted <= %s"
                " ORDER BY accepted LIMIT %s FOR UPDATE SKIP LOCKED",
                (cutoff, limit),
            )
            rows = await cur.fetchall()
        if not rows:
            return 0
        await publisher.publish(topic, [(key, bytes(value)) for _, key, value in rows])
        # Re-armed, not deleted: the worker deletes a row once it has stored the uplink.
        await conn.execute(
            "UPDATE uplink_journal SET accepted = now(), replays = replays + 1 WHERE id = ANY(%s)",
            ([row[0] for row in rows],),
        )
    REPLAYED.inc(len(rows))
    return len(rows)


async def replay_due(
    pool: Pool,
    publisher: Publisher,
    topic: Callable[[str], str],
    *,
    older_than: float,
    limit: int = REPLAY_BATCH,
) -> int:
    """Publish again every journaled uplink accepted (or last replayed) at least
    ``older_than`` seconds ago and still not stored; returns how many.

    Several workers share the table (``FOR UPDATE SKIP LOCKED``). Raises what the publisher or
    the database raises; the rows of a failed batch stay for the next call.
    """
    async with pool.connection() as conn:
        # One cutoff for the whole call: the rows it re-arms (accepted = now()) are not due
        # again in its next batch.
        cur = await conn.execute(
            "SELECT now() - make_interval(secs => %s) AS cutoff", (older_than,)
        )
        row = await cur.fetchone()
    assert row is not None
    total = 0
    while True:
        done = await _replay_batch(pool, publisher, topic(TOPIC_UPLINKS), row["cutoff"], limit)
        total += done
        if done < limit:
            break
    if total:
        log.warning("replayed %d accepted uplinks not stored yet from the intake journal", total)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM uplink_journal")
        row = await cur.fetchone()
    PENDING.set(row["n"] if row else 0)
    return total
