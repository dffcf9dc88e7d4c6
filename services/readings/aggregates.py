"""Aggregates of a device's points per metric into epoch-aligned buckets, and the planning of a
time range across the TimescaleDB continuous aggregates and the raw ``points``.

Times are Unix seconds at this boundary; time ranges are half-open (``start <= time < end``,
``None`` leaves that side unbounded) and an empty or ``None`` ``metrics`` list means every
metric. On plain PostgreSQL everything is computed from ``points``; with TimescaleDB the whole
hours and days come from the continuous aggregates ``points_hourly`` and ``points_daily``
(:mod:`services.platform.timescale_aggregates`), with the same results.

Several devices (a fleet, a place) are aggregated by the same statement, each within its own
window (:func:`aggregate_devices`): one series per device, or their values combined per bucket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal

from psycopg import AsyncConnection, sql

from services.platform import AGGREGATE_BUCKETS
from services.readings._sql import fetchall, fetchone, range_conditions

AggregateFn = Literal["avg", "min", "max", "count"]
CombineFn = Literal["avg", "min", "max"]
#: One device's points to aggregate: ``(device, start, end)``, a half-open range (None: that
#: side unbounded).
Window = tuple[str, float | None, float | None]


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
    _check(fn, bucket_seconds)
    if start is not None and end is not None and start >= end:
        return []
    rows = await _aggregate(conn, [([device], start, end)], bucket_seconds, fn, metrics, None)
    return [{"time": int(r[0]), "metric": r[1], "value": _value(r[2], fn, None)} for r in rows]


async def aggregate_devices(
    conn: AsyncConnection[Any],
    windows: Sequence[Window],
    *,
    start: float | None = None,
    end: float | None = None,
    metrics: Sequence[str] | None = None,
    bucket_seconds: int,
    fn: AggregateFn,
    combine: CombineFn | None = None,
) -> list[dict[str, Any]]:
    """Aggregate several devices' points as :func:`aggregate_points` does, each device's only
    within its window (clipped to ``[start, end)``), in one statement.

    Without ``combine``: one series per device, rows ``{"time", "device", "metric", "value"}``
    sorted by time, device, metric. With ``combine``: the devices' values of each bucket and
    metric (each device's ``fn`` over its own points) combined by ``combine`` (an average of
    devices weighs each device alike), rows ``{"time", "metric", "value"}``. Windows of one device
    must not overlap (its points would count twice); a device may have several.
    """
    _check(fn, bucket_seconds)
    if combine is not None and combine not in _COMBINE:
        raise ValueError(f"combine must be one of {sorted(_COMBINE)}, not {combine!r}")
    groups: dict[tuple[float | None, float | None], list[str]] = {}
    for device, lo, hi in windows:
        lo = lo if start is None else start if lo is None else max(lo, start)
        hi = hi if end is None else end if hi is None else min(hi, end)
        if lo is None or hi is None or lo < hi:
            groups.setdefault((lo, hi), []).append(device)
    if not groups:
        return []
    ranges = [(devices, lo, hi) for (lo, hi), devices in groups.items()]
    mode = combine or "device"
    rows = await _aggregate(conn, ranges, bucket_seconds, fn, metrics, mode)
    if combine is not None:
        return [
            {"time": int(r[0]), "metric": r[1], "value": _value(r[2], fn, combine)} for r in rows
        ]
    return [
        {"time": int(r[0]), "device": r[1], "metric": r[2], "value": _value(r[3], fn, None)}
        for r in rows
    ]


def _check(fn: str, bucket_seconds: int) -> None:
    if fn not in _PARTIALS:
        raise ValueError(f"fn must be one of {sorted(_PARTIALS)}, not {fn!r}")
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int):
        raise TypeError("bucket_seconds must be an int")
    if bucket_seconds < 1:
        raise ValueError("bucket_seconds must be at least 1")


def _value(value: Any, fn: str, combine: str | None) -> int | float:
    return int(value) if fn == "count" and combine != "avg" else float(value)


async def _aggregate(
    conn: AsyncConnection[Any],
    ranges: Sequence[tuple[Sequence[str], float | None, float | None]],
    bucket_seconds: int,
    fn: str,
    metrics: Sequence[str] | None,
    mode: str | None,
) -> list[tuple[Any, ...]]:
    """The rows of one statement over ``ranges`` (devices sharing a time range): per bucket
    and metric (``mode`` None, a single device), per bucket, device and metric (``"device"``),
    or per bucket and metric combined across devices (``mode`` a :data:`_COMBINE` key)."""
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
    params: dict[str, Any] = {"width": bucket_seconds}
    if metrics:
        params["metrics"] = list(metrics)
    parts: list[sql.Composed] = []
    for group, (devices, start, end) in enumerate(ranges):
        device: sql.Composable
        if mode is None:
            params["device"] = devices[0]
            device = sql.SQL("device = %(device)s")
        else:
            params[f"devices{group}"] = list(devices)
            device = sql.SQL("device = ANY({})").format(sql.Placeholder(f"devices{group}"))
        for source, lo, hi in plan_ranges(start, end, grains):
            conditions: list[sql.Composable] = [device]
            conditions += range_conditions(
                sql.Identifier("time" if source == "points" else "bucket"),
                lo,
                hi,
                params,
                suffix=str(len(parts)),
            )
            if metrics:
                conditions.append(sql.SQL("metric = ANY(%(metrics)s)"))
            parts.append(
                _partial_query(
                    source,
                    fn,
                    timescale=bool(timescale),
                    conditions=conditions,
                    by_device=bool(mode),
                )
            )
    final, union = sql.SQL(_FINAL[fn]), sql.SQL(" UNION ALL ").join(parts)
    if mode is None:
        query = sql.SQL(
            "SELECT extract(epoch FROM b)::bigint, metric, {final} FROM ({parts}) AS p"
            " GROUP BY b, metric ORDER BY b, metric"
        ).format(final=final, parts=union)
    elif mode == "device":
        query = sql.SQL(
            "SELECT extract(epoch FROM b)::bigint, device, metric, {final} FROM ({parts}) AS p"
            " GROUP BY b, device, metric ORDER BY b, device, metric"
        ).format(final=final, parts=union)
    else:
        query = sql.SQL(
            "SELECT extract(epoch FROM b)::bigint, metric, {combine} FROM"
            " (SELECT b, metric, {final} AS v FROM ({parts}) AS p GROUP BY b, device, metric) AS q"
            " GROUP BY b, metric ORDER BY b, metric"
        ).format(combine=sql.SQL(_COMBINE[mode]), final=final, parts=union)
    return await fetchall(conn, query, params)


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
#: How the devices' values of one bucket combine (``v``: each device's final value).
_COMBINE: Final = {"avg": "avg(v)", "min": "min(v)", "max": "max(v)"}


def _partial_query(
    source: str,
    fn: str,
    *,
    timescale: bool,
    conditions: list[sql.Composable],
    by_device: bool,
) -> sql.Composed:
    raw = source == "points"
    column = sql.Identifier("time" if raw else "bucket")
    if timescale:
        bucket = sql.SQL(
            "time_bucket(%(width)s * INTERVAL '1 second', {col}, 'epoch'::timestamptz)"
        )
    else:
        bucket = sql.SQL("date_bin(%(width)s * INTERVAL '1 second', {col}, 'epoch'::timestamptz)")
    return sql.SQL(
        "SELECT {bucket} AS b, {keys}, {partial} FROM {source} WHERE {where} GROUP BY {groups}"
    ).format(
        bucket=bucket.format(col=column),
        keys=sql.SQL("device, metric" if by_device else "metric"),
        partial=sql.SQL(_PARTIALS[fn][0 if raw else 1]),
        source=sql.Identifier(source),
        where=sql.SQL(" AND ").join(conditions),
        groups=sql.SQL("1, 2, 3" if by_device else "1, 2"),
    )
