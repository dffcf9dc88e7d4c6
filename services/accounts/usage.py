"""Usage figures per user and UTC day: uplinks, points stored, webhook deliveries, API requests.

Counting is cheap: :func:`count` adds to an in-memory buffer of this process (no I/O); a
background task calls :func:`flush` every few seconds, which upserts the whole buffer into
``usage_daily`` in one statement. Any process can count (the API counts its requests; the
pipeline can count uplinks, points and deliveries) as long as it flushes now and then::

    from services.accounts import usage
    usage.count(owner_id, "points", len(points))
    ...
    await usage.flush(conn)   # periodically and at shutdown
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any, Literal

from psycopg import AsyncConnection

Row = dict[str, Any]
Field = Literal["uplinks", "points", "deliveries", "api_requests"]
FIELDS: tuple[Field, ...] = ("uplinks", "points", "deliveries", "api_requests")

# Rows of a user deleted since it was counted are skipped (the foreign key would refuse them).
_UPSERT = """
INSERT INTO usage_daily AS u (user_id, day, uplinks, points, deliveries, api_requests)
SELECT v.* FROM unnest(%s::bigint[], %s::date[], %s::bigint[], %s::bigint[], %s::bigint[],
                       %s::bigint[]) AS v(user_id, day, uplinks, points, deliveries, api_requests)
WHERE EXISTS (SELECT 1 FROM users WHERE users.id = v.user_id)
ON CONFLICT (user_id, day) DO UPDATE SET
    uplinks = u.uplinks + EXCLUDED.uplinks,
    points = u.points + EXCLUDED.points,
    deliveries = u.deliveries + EXCLUDED.deliveries,
    api_requests = u.api_requests + EXCLUDED.api_requests
"""


def _zeros() -> list[int]:
    return [0] * len(FIELDS)


class UsageBuffer:
    """Counters by (user id, UTC day) waiting to be written."""

    def __init__(self) -> None:
        self._counts: defaultdict[tuple[int, date], list[int]] = defaultdict(_zeros)

    def count(self, user_id: int, field: Field, n: int = 1, *, at: float | None = None) -> None:
        """Add ``n`` to ``field`` of the user's day (today in UTC unless ``at`` says otherwise)."""
        day = datetime.fromtimestamp(time.time() if at is None else at, UTC).date()
        self._counts[(user_id, day)][FIELDS.index(field)] += n

    def pending(self) -> dict[tuple[int, date], dict[str, int]]:
        """What is buffered, for tests and diagnostics."""
        return {k: dict(zip(FIELDS, v, strict=True)) for k, v in self._counts.items()}

    async def flush(self, conn: AsyncConnection[Row]) -> int:
        """Upsert everything buffered in one statement; returns the (user, day) pairs sent.

        On a database error the counts go back into the buffer for the next flush.
        """
        if not self._counts:
            return 0
        batch, self._counts = self._counts, defaultdict(_zeros)
        keys = list(batch)
        columns: list[list[Any]] = [[k[0] for k in keys], [k[1] for k in keys]]
        columns += [[batch[k][i] for k in keys] for i in range(len(FIELDS))]
        try:
            await conn.execute(_UPSERT, columns)
        except BaseException:
            for key, values in batch.items():
                mine = self._counts[key]
                for i, value in enumerate(values):
                    mine[i] += value
            raise
        return len(keys)


#: This process's buffer.
BUFFER = UsageBuffer()


def count(user_id: int, field: Field, n: int = 1) -> None:
    """Count ``n`` events of ``field`` for the user today (buffered; see :func:`flush`)."""
    BUFFER.count(user_id, field, n)


async def flush(conn: AsyncConnection[Row]) -> int:
    """Write this process's buffered counts (call periodically and at shutdown)."""
    return await BUFFER.flush(conn)


def day_range(
    start: float | None, end: float | None, *, now: float | None = None
) -> tuple[date, date]:
    """The UTC days covered by ``[start, end]`` (Unix seconds); default the last 30 days.

    Raises ``ValueError`` when the range is reversed or longer than 366 days.
    """
    now = time.time() if now is None else now
    last = datetime.fromtimestamp(now if end is None else end, UTC).date()
    first = (
        last - timedelta(days=29) if start is None else datetime.fromtimestamp(start, UTC).date()
    )
    if first > last:
        raise ValueError("'from' is after 'to'")
    if (last - first).days > 366:
        raise ValueError("the range is limited to 366 days")
    return first, last


async def query_usage(
    conn: AsyncConnection[Row], *, user_ids: Sequence[int], first: date, last: date
) -> list[dict[str, Any]]:
    """Usage rows of these users between two UTC days (inclusive), by day then username."""
    cur = await conn.execute(
        "SELECT u.username, d.day, d.uplinks, d.points, d.deliveries, d.api_requests"
        " FROM usage_daily d JOIN users u ON u.id = d.user_id"
        " WHERE d.user_id = ANY(%s) AND d.day BETWEEN %s AND %s ORDER BY d.day, u.username",
        (list(user_ids), first, last),
    )
    return [
        {
            "user": row["username"],
            "day": int(datetime.combine(row["day"], dt_time(), UTC).timestamp()),
            "date": row["day"].isoformat(),
            **{field: int(row[field]) for field in FIELDS},
        }
        for row in await cur.fetchall()
    ]
