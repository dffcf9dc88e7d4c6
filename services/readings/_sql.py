"""SQL helpers shared by the readings stores: fetch tuples whatever the connection's row factory,
turn a ``timestamptz`` into Unix seconds, and write the conditions of a half-open time range
(``start <= time < end``; ``None`` leaves that side unbounded) with their parameters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row


def range_conditions(
    column: sql.Identifier,
    start: float | None,
    end: float | None,
    params: dict[str, Any],
    *,
    suffix: str = "",
) -> list[sql.Composable]:
    """``column``'s conditions for ``[start, end)``; their values are added to ``params``
    (named ``start``/``end`` plus ``suffix``)."""
    conditions: list[sql.Composable] = []
    if start is not None:
        conditions.append(
            sql.SQL("{} >= to_timestamp({})").format(column, sql.Placeholder("start" + suffix))
        )
        params["start" + suffix] = float(start)
    if end is not None:
        conditions.append(
            sql.SQL("{} < to_timestamp({})").format(column, sql.Placeholder("end" + suffix))
        )
        params["end" + suffix] = float(end)
    return conditions


def unix(value: datetime) -> float:
    """A ``timestamptz`` as Unix seconds."""
    return value.timestamp()


async def fetchone(
    conn: AsyncConnection[Any], query: str | sql.Composed, params: Any = None
) -> tuple[Any, ...] | None:
    """The query's first row as a tuple, or None."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def fetchall(
    conn: AsyncConnection[Any], query: str | sql.Composed, params: Any = None
) -> list[tuple[Any, ...]]:
    """The query's rows as tuples."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
