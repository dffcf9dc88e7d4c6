"""The webhook attempt log in PostgreSQL (``webhook_deliveries``): attempts buffered and
written in bulk off the delivery path, listed for the API (recent deliveries), and pruned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import errors

from services.webhooks.model import AttemptRecord
from services.webhooks.rows import Conn, Row, dt


def delivery_body(row: Row) -> dict[str, Any]:
    """An attempt as listed."""
    return {
        "id": row["id"],
        "time": row["at"].timestamp(),
        "attempt": row["attempt"],
        "outcome": row["outcome"],
        "result": row["result"],
        "status": row["status"],
        "latency_ms": row["latency_ms"],
        "error": row["error"],
        "message_id": row["message_id"],
    }


async def list_deliveries(
    conn: Conn, *, webhook_id: int, limit: int = 100, before: int | None = None
) -> list[Row]:
    """The webhook's recorded attempts, newest first (``before``: ids below this one)."""
    cur = await conn.execute(
        "SELECT id, at, attempt, outcome, result, status, latency_ms, error, message_id"
        " FROM webhook_deliveries WHERE webhook_id = %s AND (%s::bigint IS NULL OR id < %s)"
        " ORDER BY id DESC LIMIT %s",
        (webhook_id, before, before, limit),
    )
    return await cur.fetchall()


_INSERT_RECORDS = """
INSERT INTO webhook_deliveries
    (webhook_id, at, attempt, outcome, result, status, latency_ms, error, message_id, body)
SELECT v.* FROM unnest(%s::bigint[], %s::timestamptz[], %s::int[], %s::text[], %s::text[],
                       %s::int[], %s::real[], %s::text[], %s::text[], %s::text[])
    AS v(webhook_id, at, attempt, outcome, result, status, latency_ms, error, message_id, body)
WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.id = v.webhook_id)
"""


_COPY_RECORDS = """
COPY webhook_deliveries
    (webhook_id, at, attempt, outcome, result, status, latency_ms, error, message_id, body)
FROM STDIN
"""


async def insert_records(conn: Conn, records: Sequence[AttemptRecord]) -> None:
    """Insert attempts with ``COPY`` (about 5 times the rows/s of a multi-row insert); when a
    webhook was deleted meanwhile, again with an insert that skips its attempts."""
    if not records:
        return
    try:
        async with conn.transaction(), conn.cursor().copy(_COPY_RECORDS) as copy:
            for x in records:
                await copy.write_row(
                    (
                        x.webhook_id,
                        dt(x.at),
                        x.attempt,
                        x.outcome,
                        x.result,
                        x.status,
                        x.latency_ms,
                        x.error,
                        x.message_id,
                        x.body,
                    )
                )
        return
    except errors.ForeignKeyViolation:
        pass
    r = records
    await conn.execute(
        _INSERT_RECORDS,
        (
            [x.webhook_id for x in r],
            [dt(x.at) for x in r],
            [x.attempt for x in r],
            [x.outcome for x in r],
            [x.result for x in r],
            [x.status for x in r],
            [x.latency_ms for x in r],
            [x.error for x in r],
            [x.message_id for x in r],
            [x.body for x in r],
        ),
    )


class AttemptLog:
    """Attempts waiting to be written to ``webhook_deliveries``, in bulk, off the delivery
    path: :meth:`add` buffers, :meth:`flush` writes everything in one statement (call it every
    fraction of a second, and at shutdown). Past ``max_backlog`` rows, :meth:`add` callers
    should flush before going on (:attr:`full`), so a slow database slows deliveries down
    rather than filling the memory. A crash loses what was buffered: the log is a record for
    people; what delivering depends on (the retry queue, health) is written at once.
    """

    def __init__(self, *, max_backlog: int = 50_000) -> None:
        self._buffer: list[AttemptRecord] = []
        self._max_backlog = max_backlog
        self._lock = asyncio.Lock()
        #: Webhooks with attempts written since the last :meth:`take_written`.
        self._written: set[int] = set()

    def add(self, records: Iterable[AttemptRecord]) -> None:
        self._buffer.extend(records)

    @property
    def backlog(self) -> int:
        return len(self._buffer)

    @property
    def full(self) -> bool:
        return len(self._buffer) >= self._max_backlog

    async def flush(self, conn: Conn) -> int:
        """Write the buffered attempts; on a database error they stay buffered."""
        async with self._lock:
            batch, self._buffer = self._buffer, []
            try:
                await insert_records(conn, batch)
            except BaseException:
                self._buffer[:0] = batch
                raise
            self._written.update(record.webhook_id for record in batch)
            return len(batch)

    def take_written(self) -> set[int]:
        """The webhooks written to since the last call (to prune)."""
        written, self._written = self._written, set()
        return written


_TRIM = """
DELETE FROM webhook_deliveries d
USING (
    SELECT h.id AS webhook_id,
           (SELECT x.id FROM webhook_deliveries x WHERE x.webhook_id = h.id
            ORDER BY x.id DESC OFFSET %s LIMIT 1) AS cutoff
    FROM unnest(%s::bigint[]) AS h(id)
) c
WHERE d.webhook_id = c.webhook_id AND d.id <= c.cutoff
"""


async def prune_deliveries(conn: Conn, *, webhook_ids: Sequence[int], keep: int, days: int) -> int:
    """Keep the newest ``keep`` attempts of each of ``webhook_ids`` (those written to since the
    last pruning), and no attempt older than ``days`` days; returns the rows deleted."""
    deleted = 0
    if webhook_ids:
        cur = await conn.execute(_TRIM, (keep, sorted(webhook_ids)))
        deleted += cur.rowcount
    cur = await conn.execute(
        "DELETE FROM webhook_deliveries WHERE at < now() - make_interval(days => %s)", (days,)
    )
    return deleted + cur.rowcount
