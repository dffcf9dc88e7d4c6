"""Data points: store a batch, page through a device's points, aggregate them, read the latest.

Plain async functions over a psycopg 3 ``AsyncConnection`` (any row factory: they read tuples).
Times are Unix seconds (floats) at this boundary and ``timestamptz`` in the database. Time ranges
are half-open: ``start <= time < end``; ``None`` leaves that side unbounded. An empty or ``None``
``metrics`` list means every metric.

Every function works on plain PostgreSQL and on TimescaleDB (including the PGlite build used by
the tests: no ``COPY FROM STDIN``, one statement per round trip is all it needs).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import orjson
from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from services.platform.events import DataPoint
from services.platform.timescale import AGGREGATE_BUCKETS

Order = Literal["desc", "asc"]
AggregateFn = Literal["avg", "min", "max", "count"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


class InvalidCursor(ValueError):
    """A pagination cursor that this module did not produce (or for the other order)."""


# One statement per batch: it inserts the new points and moves device_latest forward, atomically.
# Rows are sorted by key so that concurrent batches take their row locks in the same order.
# Parameters go in binary (%b): dumping five 1,000-element arrays as text costs more than
# the insert itself.
_STORE_POINTS: Final = """
WITH input AS (
    SELECT device, metric, to_timestamp(t) AS time, value, unit, ord
    FROM unnest(%b::text[], %b::text[], %b::float8[], %b::float8[], %b::text[])
         WITH ORDINALITY AS u(device, metric, t, value, unit, ord)
), inserted AS (
    INSERT INTO points (device, metric, time, value, unit)
    SELECT device, metric, time, value, unit FROM input ORDER BY device, metric, time
    ON CONFLICT DO NOTHING
    RETURNING 1
), latest AS (
    INSERT INTO device_latest (device, metric, time, value, unit)
    SELECT DISTINCT ON (device, metric) device, metric, time, value, unit
    FROM input ORDER BY device, metric, time DESC, ord
    ON CONFLICT (device, metric) DO UPDATE
    SET time = EXCLUDED.time, value = EXCLUDED.value, unit = EXCLUDED.unit
    WHERE device_latest.time < EXCLUDED.time
)
SELECT count(*) FROM inserted
"""


async def store_points(conn: AsyncConnection[Any], points: Sequence[DataPoint]) -> int:
    """Store a batch in one statement; return how many points were new.

    Points already stored (same device, metric and time) are skipped, so replaying a batch is
    harmless. ``device_latest`` only moves forward: an older point never replaces a newer one.
    """
    if not points:
        return 0
    row = await _fetchone(
        conn,
        _STORE_POINTS,
        (
            [p.device for p in points],
            [p.metric for p in points],
            [float(p.time) for p in points],
            [float(p.value) for p in points],
            [p.unit for p in points],
        ),
    )
    return int(row[0]) if row else 0


async def store_state(
    conn: AsyncConnection[Any], device: str, time: float, state: dict[str, Any]
) -> bool:
    """Record a device's state report unless a newer one is stored; True if it was recorded."""
    row = await _fetchone(
        conn,
        """
        INSERT INTO device_state (device, time, state) VALUES (%s, to_timestamp(%s), %s)
        ON CONFLICT (device) DO UPDATE SET time = EXCLUDED.time, state = EXCLUDED.state
        WHERE device_state.time < EXCLUDED.time
        RETURNING 1
        """,
        (device, float(time), Jsonb(state)),
    )
    return row is not None


async def latest_state(
    conn: AsyncConnection[Any], device: str
) -> tuple[float, dict[str, Any]] | None:
    """The device's latest state report as ``(time, state)``, or None."""
    row = await _fetchone(conn, "SELECT time, state FROM device_state WHERE device = %s", (device,))
    if row is None:
        return None
    return _unix(row[0]), dict(row[1])


async def latest_points(conn: AsyncConnection[Any], device: str) -> list[DataPoint]:
    """The latest point of each of the device's metrics, by metric name."""
    rows = await _fetchall(
        conn,
        "SELECT device, time, metric, value, unit FROM device_latest"
        " WHERE device = %s ORDER BY metric",
        (device,),
    )
    return [DataPoint(r[0], _unix(r[1]), r[2], float(r[3]), r[4]) for r in rows]


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
    conditions += _range_conditions(sql.Identifier("time"), start, end, params)
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
    rows = await _fetchall(conn, query, params)
    more = len(rows) > limit
    rows = rows[:limit]
    data = [DataPoint(device, _unix(r[0]), r[1], float(r[2]), r[3]) for r in rows]
    next_cursor = encode_cursor(rows[-1][0], rows[-1][1], order) if more else None
    return data, next_cursor


async def aggregate_points(
    conn: AsyncConnection[Any],
    device: str,
    *,
    start: float | None = None,
    end: float | None = None,
    metrics: Sequence[str] | None = None,
    bucket_seconds: int,
    fn: AggregateFn,
) -> list[dict[str, Any]]:
    """Aggregate a device's points per metric into buckets of ``bucket_seconds``.

    Buckets are aligned on the Unix epoch (a bucket starts at a multiple of ``bucket_seconds``)
    and only buckets with points are returned, as ``{"time": bucket start (int), "metric",
    "value"}`` sorted by time then metric; ``count`` values are ints, the others floats.

    With TimescaleDB, the whole hours or days of the range are read from ``points_daily`` and
    ``points_hourly`` when the bucket is a multiple of theirs (averages weighted by count), and
    only the ragged ends of the range from ``points``; the result is the same as from ``points``.
    """
    if fn not in _PARTIALS:
        raise ValueError(f"fn must be one of {sorted(_PARTIALS)}, not {fn!r}")
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int):
        raise TypeError("bucket_seconds must be an int")
    if bucket_seconds < 1:
        raise ValueError("bucket_seconds must be at least 1")
    if start is not None and end is not None and start >= end:
        return []
    caps = await _fetchone(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),"
        " to_regclass('points_daily') IS NOT NULL, to_regclass('points_hourly') IS NOT NULL",
    )
    timescale, has_daily, has_hourly = caps if caps else (False, False, False)
    present = {"points_daily": has_daily, "points_hourly": has_hourly}
    grains = [
        (view, width)
        for view, width in AGGREGATE_BUCKETS.items()
        if present[view] and bucket_seconds % width == 0
    ]
    params: dict[str, Any] = {"device": device, "width": bucket_seconds}
    if metrics:
        params["metrics"] = list(metrics)
    parts = [
        _partial_query(source, lo, hi, fn, timescale=bool(timescale), params=params, index=i)
        for i, (source, lo, hi) in enumerate(plan_ranges(start, end, grains))
    ]
    query = sql.SQL(
        "SELECT extract(epoch FROM b)::bigint, metric, {final} FROM ({parts}) AS p"
        " GROUP BY b, metric ORDER BY b, metric"
    ).format(final=sql.SQL(_FINAL[fn]), parts=sql.SQL(" UNION ALL ").join(parts))
    rows = await _fetchall(conn, query, params)
    return [
        {"time": int(r[0]), "metric": r[1], "value": int(r[2]) if fn == "count" else float(r[2])}
        for r in rows
    ]


def plan_ranges(
    start: float | None, end: float | None, grains: Sequence[tuple[str, int]]
) -> list[tuple[str, float | None, float | None]]:
    """Split ``[start, end)`` into ranges answered by each source, coarsest first.

    ``grains`` are ``(aggregate view, bucket seconds)``, coarsest first, each a multiple of the
    next; what no whole bucket of any view covers is read from ``"points"``. Returns
    ``(source, lo, hi)`` ranges in time order, ``None`` bounds meaning unbounded.
    """
    if not grains:
        return [("points", start, end)]
    (view, width), finer = grains[0], grains[1:]
    lo = None if start is None else _bucket_edge(start, width, up=True)
    hi = None if end is None else _bucket_edge(end, width, up=False)
    if lo is not None and hi is not None and lo >= hi:
        return plan_ranges(start, end, finer)
    ranges: list[tuple[str, float | None, float | None]] = []
    if start is not None and lo is not None and start < lo:
        ranges += plan_ranges(start, lo, finer)
    ranges.append((view, lo, hi))
    if end is not None and hi is not None and hi < end:
        ranges += plan_ranges(hi, end, finer)
    return ranges


def _bucket_edge(t: float, width: int, *, up: bool) -> int:
    """The bucket boundary at or after (``up``) / at or before ``t``.

    ``t / width`` can round (a subnormal ``t`` divides to 0.0): the edge is corrected so it
    never falls on the wrong side of ``t``.
    """
    edge = (math.ceil(t / width) if up else math.floor(t / width)) * width
    if up and edge < t:
        edge += width
    elif not up and edge > t:
        edge -= width
    return edge


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


# Partial aggregates per source (raw points, or an aggregate's columns) and how they combine.
_PARTIALS: Final = {
    "avg": ("sum(value) AS s, count(*) AS n", "sum(sum) AS s, sum(count) AS n"),
    "min": ("min(value) AS v", "min(min) AS v"),
    "max": ("max(value) AS v", "max(max) AS v"),
    "count": ("count(*) AS n", "sum(count) AS n"),
}
_FINAL: Final = {
    "avg": "sum(s) / sum(n)",
    "min": "min(v)",
    "max": "max(v)",
    "count": "sum(n)::bigint",
}


def _partial_query(
    source: str,
    lo: float | None,
    hi: float | None,
    fn: str,
    *,
    timescale: bool,
    params: dict[str, Any],
    index: int,
) -> sql.Composed:
    raw = source == "points"
    column = sql.Identifier("time" if raw else "bucket")
    if timescale:
        bucket = sql.SQL(
            "time_bucket(%(width)s * INTERVAL '1 second', {col}, 'epoch'::timestamptz)"
        )
    else:
        bucket = sql.SQL("date_bin(%(width)s * INTERVAL '1 second', {col}, 'epoch'::timestamptz)")
    conditions: list[sql.Composable] = [sql.SQL("device = %(device)s")]
    conditions += _range_conditions(column, lo, hi, params, suffix=str(index))
    if "metrics" in params:
        conditions.append(sql.SQL("metric = ANY(%(metrics)s)"))
    return sql.SQL(
        "SELECT {bucket} AS b, metric, {partial} FROM {source} WHERE {where} GROUP BY 1, 2"
    ).format(
        bucket=bucket.format(col=column),
        partial=sql.SQL(_PARTIALS[fn][0 if raw else 1]),
        source=sql.Identifier(source),
        where=sql.SQL(" AND ").join(conditions),
    )


def _range_conditions(
    column: sql.Identifier,
    start: float | None,
    end: float | None,
    params: dict[str, Any],
    *,
    suffix: str = "",
) -> list[sql.Composable]:
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


def _unix(value: datetime) -> float:
    return value.timestamp()


async def _fetchone(
    conn: AsyncConnection[Any], query: str | sql.Composed, params: Any = None
) -> tuple[Any, ...] | None:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def _fetchall(
    conn: AsyncConnection[Any], query: str | sql.Composed, params: Any = None
) -> list[tuple[Any, ...]]:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
