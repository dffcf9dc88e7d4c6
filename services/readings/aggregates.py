"""Aggregates of a device's points per metric into epoch-aligned buckets, and the planning of a
time range across the TimescaleDB continuous aggregates and the raw ``points``.

Times are Unix seconds at this boundary; time ranges are half-open (``start <= time < end``,
``None`` leaves that side unbounded) and an empty or ``None`` ``metrics`` list means every
metric. On plain PostgreSQL everything is computed from ``points``; with TimescaleDB the whole
hours and days come from the continuous aggregates ``points_hourly`` and ``points_daily``
(:mod:`services.platform.timescale_aggregates`), with the same results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal

from psycopg import AsyncConnection, sql

from services.platform import AGGREGATE_BUCKETS
from services.readings._sql import fetchall, fetchone, range_conditions

AggregateFn = Literal["avg", "min", "max", "count"]


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
    caps = await fetchone(
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
    rows = await fetchall(conn, query, params)
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
    conditions += range_conditions(column, lo, hi, params, suffix=str(index))
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
