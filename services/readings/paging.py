"""Paging through a device's points: one page of ``points`` at a time, with opaque cursors.

Keyset pagination on ``(time, metric)`` (unique per device); a cursor is base64url of
``[microseconds, metric, order]`` and is only valid with the order it was made for. Times are
Unix seconds at this boundary; time ranges are half-open (``start <= time < end``, ``None``
leaves that side unbounded) and an empty or ``None`` ``metrics`` list means every metric.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import orjson
from psycopg import AsyncConnection, sql

from services.platform import DataPoint
from services.readings._sql import fetchall, range_conditions, unix

Order = Literal["desc", "asc"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


class InvalidCursor(ValueError):
    """A pagination cursor that this module did not produce (or for the other order)."""


async def query_points(
    conn: AsyncConnection[Any],
    device: str,
    *,
    start: float | None = None,
    end: float | None = None,
    metrics: Sequence[str] | None = None,
    limit: int = 100,
    cursor: str | None = None,
    order: Order = "desc",
) -> tuple[list[DataPoint], str | None]:
    """One page of a device's points and the cursor of the next page (None on the last page).

    Keyset pagination on ``(time, metric)``: a page starts strictly after the previous page's last
    point, so a walk never repeats nor skips a point, whatever is inserted meanwhile (points
    inserted ahead of the walk appear on a later page). Newest first unless ``order="asc"``.
    Raises :class:`InvalidCursor` for a cursor not made by this function for the same order.
    """
    if order not in ("desc", "asc"):
        raise ValueError(f"order must be 'desc' or 'asc', not {order!r}")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    after = decode_cursor(cursor, order) if cursor is not None else None
    desc = order == "desc"
    conditions: list[sql.Composable] = [sql.SQL("device = %(device)s")]
    params: dict[str, Any] = {"device": device, "limit": limit + 1}
    conditions += range_conditions(sql.Identifier("time"), start, end, params)
    if metrics:
        conditions.append(sql.SQL("metric = ANY(%(metrics)s)"))
        params["metrics"] = list(metrics)
    if after is not None:
        op = "<" if desc else ">"
        conditions.append(sql.SQL("(time, metric) " + op + " (%(after_time)s, %(after_metric)s)"))
        params["after_time"], params["after_metric"] = after
    direction = sql.SQL("DESC" if desc else "ASC")
    query = sql.SQL(
        "SELECT time, metric, value, unit FROM points WHERE {where}"
        " ORDER BY time {direction}, metric {direction} LIMIT %(limit)s"
    ).format(where=sql.SQL(" AND ").join(conditions), direction=direction)
    rows = await fetchall(conn, query, params)
    more = len(rows) > limit
    rows = rows[:limit]
    data = [DataPoint(device, unix(r[0]), r[1], float(r[2]), r[3]) for r in rows]
    next_cursor = encode_cursor(rows[-1][0], rows[-1][1], order) if more else None
    return data, next_cursor


def encode_cursor(time: datetime, metric: str, order: Order) -> str:
    """The opaque cursor after the point at ``(time, metric)``: base64url of JSON."""
    micros = (time - _EPOCH) // _MICROSECOND
    raw = orjson.dumps([micros, metric, order[0]])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, order: Order) -> tuple[datetime, str]:
    """The ``(time, metric)`` a cursor points after; :class:`InvalidCursor` if malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, metric, flag = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise InvalidCursor("malformed cursor") from exc
    if isinstance(micros, bool) or not isinstance(micros, int) or not isinstance(metric, str):
        raise InvalidCursor("malformed cursor")
    if "\x00" in metric:  # no metric holds one (PostgreSQL text cannot)
        raise InvalidCursor("malformed cursor")
    if flag != order[0]:
        raise InvalidCursor(f"cursor was not made for order={order!r}")
    try:
        return _EPOCH + micros * _MICROSECOND, metric
    except OverflowError as exc:
        raise InvalidCursor("cursor time out of range") from exc
