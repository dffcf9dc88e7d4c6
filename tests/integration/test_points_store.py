"""Point storage and queries against a real PostgreSQL (no TimescaleDB: the plain fallback).

The database is the suite's (``pg_server``: ``HIVEPIPE_TEST_DATABASE_URL``, or one it starts);
each module run gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import base64
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.platform.events import DataPoint
from services.readings.aggregates import (
    AggregateFn,
    aggregate_devices,
    aggregate_points,
    plan_ranges,
)
from services.readings.paging import (
    InvalidCursor,
    Order,
    decode_cursor,
    encode_cursor,
    query_points,
)
from services.readings.points import latest_points, latest_points_of, store_points
from services.readings.state import latest_state, store_state
from tests.conftest import drop_schema, new_schema

CORE_SQL = Path(__file__).resolve().parents[2] / "services/platform/migrations/0001_core.sql"
BASE = 1_790_000_000.0  # a Unix time well inside the supported range, not aligned to an hour


@pytest.fixture(scope="module")
async def pg_schema(pg_server: str) -> AsyncIterator[str]:
    """The URL of a schema of this module's own, with the core tables."""
    name, url = new_schema(pg_server)
    try:
        async with await _connect(url) as conn:
            await conn.execute(CORE_SQL.read_text())
        yield url
    finally:
        drop_schema(pg_server, name)


@pytest.fixture(scope="module")
async def conn(pg_schema: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await _connect(pg_schema) as c:
        yield c


@pytest.fixture(scope="module")
async def other_conn(pg_schema: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A second session, to write while the first one pages."""
    async with await _connect(pg_schema) as c:
        yield c


async def _connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


def make_points(
    device: str, n: int, metrics: Iterable[str] = ("temperature", "humidity")
) -> list[DataPoint]:
    """``n`` instants, every metric at each (ties on time), with sub-second times."""
    return [
        DataPoint(
            device, round(BASE + i * 613 + (i % 7) * 0.123457, 6), m, (i * 7919 % 101) / 4, "u"
        )
        for i in range(n)
        for m in metrics
    ]


def key(p: DataPoint) -> tuple[str, str, float]:
    return (p.device, p.metric, p.time)


# --- store -------------------------------------------------------------------------------------


async def test_store_is_idempotent(conn: psycopg.AsyncConnection[Any]) -> None:
    batch = make_points("IDEM", 50)
    assert await store_points(conn, batch) == len(batch)
    assert await store_points(conn, batch) == 0
    # A batch mixing old and new points counts only the new ones; duplicates inside a batch once.
    extra = make_points("IDEM", 60)[len(batch) :]
    assert await store_points(conn, batch[:10] + extra + extra) == len(extra)
    assert await store_points(conn, []) == 0
    cur = await conn.execute("SELECT count(*) FROM points WHERE device = 'IDEM'")
    assert await cur.fetchone() == (60 * 2,)


async def test_stored_points_round_trip(conn: psycopg.AsyncConnection[Any]) -> None:
    batch = [
        DataPoint("TRIP", 1_700_000_000.123456, "temperature", 23.1, "°C"),
        DataPoint("TRIP", 1_700_000_001, "battery", 3, None),
    ]
    await store_points(conn, batch)
    page, _ = await query_points(conn, "TRIP", order="asc", limit=10)
    assert page == [
        DataPoint("TRIP", 1_700_000_000.123456, "temperature", 23.1, "°C"),
        DataPoint("TRIP", 1_700_000_001.0, "battery", 3.0, None),
    ]


async def test_stored_points_keep_their_text_and_values_exactly(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # The batch travels as one JSON parameter: quotes, backslashes, non-ASCII text, the
    # shortest float that round-trips, and a NaN (orjson writes null) come back as they went.
    odd = 'q"uo\\te \u00e9\u2603\n'
    batch = [
        DataPoint("JSONX", 1_700_000_000.000001, odd, 0.1 + 0.2, odd),
        DataPoint("JSONX", 1_700_000_000.5, "tiny", 5e-324, "x"),
        DataPoint("JSONX", 1_700_000_001, "nan", math.nan, None),
    ]
    assert await store_points(conn, batch) == 3
    page, _ = await query_points(conn, "JSONX", order="asc", limit=10)
    assert page[:2] == batch[:2]
    assert page[2].metric == "nan"
    assert math.isnan(page[2].value)


async def test_latest_only_moves_forward(conn: psycopg.AsyncConnection[Any]) -> None:
    await store_points(conn, [DataPoint("LAT", 1000.0, "t", 1.0, "C")])
    await store_points(conn, [DataPoint("LAT", 500.0, "t", 2.0, "C")])  # older: ignored
    assert await latest_points(conn, "LAT") == [DataPoint("LAT", 1000.0, "t", 1.0, "C")]
    # One batch out of order: the newest of the batch wins, per metric.
    await store_points(
        conn,
        [
            DataPoint("LAT", 3000.0, "t", 3.0, "C"),
            DataPoint("LAT", 2000.0, "t", 4.0, "C"),
            DataPoint("LAT", 100.0, "h", 50.0, "%"),
        ],
    )
    assert await latest_points(conn, "LAT") == [
        DataPoint("LAT", 100.0, "h", 50.0, "%"),
        DataPoint("LAT", 3000.0, "t", 3.0, "C"),
    ]
    # The same time again (a replay) changes nothing.
    await store_points(conn, [DataPoint("LAT", 3000.0, "t", 99.0, "C")])
    assert (await latest_points(conn, "LAT"))[1].value == 3.0
    assert await latest_points(conn, "NOBODY") == []


async def test_state_only_moves_forward(conn: psycopg.AsyncConnection[Any]) -> None:
    assert await latest_state(conn, "ST") is None
    assert await store_state(conn, "ST", 200.5, {"relay": [1, 0], "adc": {"a0": 1.5}})
    assert not await store_state(conn, "ST", 100.0, {"relay": [0, 0]})
    assert not await store_state(conn, "ST", 200.5, {"relay": [0, 0]})
    assert await latest_state(conn, "ST") == (200.5, {"relay": [1, 0], "adc": {"a0": 1.5}})
    assert await store_state(conn, "ST", 300.0, {"relay": [0, 1]})
    assert await latest_state(conn, "ST") == (300.0, {"relay": [0, 1]})


# --- pages -------------------------------------------------------------------------------------


async def walk(conn: psycopg.AsyncConnection[Any], device: str, **kwargs: Any) -> list[DataPoint]:
    seen: list[DataPoint] = []
    cursor = None
    while True:
        page, cursor = await query_points(conn, device, cursor=cursor, **kwargs)
        seen += page
        if cursor is None:
            return seen


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_pages_walk_every_point_once(
    conn: psycopg.AsyncConnection[Any], other_conn: psycopg.AsyncConnection[Any], order: Order
) -> None:
    device = f"PAGE-{order}"
    points = make_points(device, 40, metrics=("a", "b", "c"))
    await store_points(conn, points)
    for limit in (1, 7, 120, 500):
        seen = await walk(conn, device, order=order, limit=limit)
        expected = sorted(points, key=lambda p: (p.time, p.metric), reverse=order == "desc")
        assert seen == expected

    # Points arrive from another session between pages: the walk never repeats or skips one.
    # Those behind the walk's position are met later; those already passed are not.
    seen, cursor, step = [], None, 0
    late: list[DataPoint] = []
    while True:
        page, cursor = await query_points(conn, device, order=order, limit=9, cursor=cursor)
        seen += page
        if cursor is None:
            break
        step += 1
        edge = page[-1].time
        behind = edge - 0.5 if order == "desc" else edge + 0.5  # not yet walked
        passed = edge + 0.5 if order == "desc" else edge - 0.5  # already walked
        new = [DataPoint(device, behind, f"late{step}", 1.0), DataPoint(device, passed, "x", 2.0)]
        await store_points(other_conn, new)
        late.append(new[0])
    assert len(late) > 5
    keys = [key(p) for p in seen]
    assert len(keys) == len(set(keys))
    assert set(keys) == {key(p) for p in points} | {key(p) for p in late}
    assert keys == sorted(keys, key=lambda k: (k[2], k[1]), reverse=order == "desc")


async def test_pages_filter_by_metric_and_range(conn: psycopg.AsyncConnection[Any]) -> None:
    points = make_points("FILT", 30, metrics=("a", "b", "c"))
    await store_points(conn, points)
    start, end = points[15].time, points[60].time
    got = await walk(conn, "FILT", metrics=["a", "c"], start=start, end=end, limit=4, order="asc")
    expected = [p for p in points if p.metric in ("a", "c") and start <= p.time < end]
    assert got == sorted(expected, key=lambda p: (p.time, p.metric))
    assert got  # the filter kept something
    assert await walk(conn, "FILT", metrics=["zzz"], limit=4) == []
    assert await walk(conn, "FILT", metrics=[], limit=1000) == await walk(conn, "FILT", limit=1000)


async def test_bad_cursors_are_refused(conn: psycopg.AsyncConnection[Any]) -> None:
    await store_points(conn, make_points("CUR", 5))
    _, cursor = await query_points(conn, "CUR", limit=2)
    assert cursor is not None
    with pytest.raises(InvalidCursor):
        await query_points(conn, "CUR", limit=2, cursor=cursor, order="asc")
    nul = base64.urlsafe_b64encode(b'[1,"a\\u0000b","d"]').decode()  # a NUL in the metric
    for bad in ("", "not base64 !", "e30", "WzEsMiwzXQ", cursor[:-3], nul):
        with pytest.raises(InvalidCursor):
            await query_points(conn, "CUR", limit=2, cursor=bad)
    with pytest.raises(ValueError, match="limit"):
        await query_points(conn, "CUR", limit=0)


@given(
    micros=st.integers(min_value=0, max_value=253_402_300_799_999_999),
    metric=st.text().filter(lambda m: "\x00" not in m),  # no metric can hold a NUL
    order=st.sampled_from(["desc", "asc"]),
)
def test_cursor_round_trip(micros: int, metric: str, order: Any) -> None:
    from datetime import UTC, datetime, timedelta

    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    assert decode_cursor(encode_cursor(when, metric, order), order) == (when, metric)


# --- aggregates --------------------------------------------------------------------------------


def expected_aggregates(
    points: list[DataPoint],
    bucket: int,
    fn: AggregateFn,
    start: float | None,
    end: float | None,
    metrics: list[str] | None = None,
) -> list[dict[str, Any]]:
    groups: dict[tuple[int, str], list[float]] = defaultdict(list)
    for p in points:
        if (start is None or p.time >= start) and (end is None or p.time < end):
            if not metrics or p.metric in metrics:
                groups[(math.floor(p.time / bucket) * bucket, p.metric)].append(p.value)
    functions: dict[str, Callable[[list[float]], float]] = {
        "avg": lambda v: sum(v) / len(v),
        "min": lambda v: min(v),
        "max": lambda v: max(v),
        "count": lambda v: len(v),
    }
    compute = functions[fn]
    return [{"time": t, "metric": m, "value": compute(groups[(t, m)])} for t, m in sorted(groups)]


def assert_same_aggregates(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [(r["time"], r["metric"]) for r in got] == [(r["time"], r["metric"]) for r in expected]
    for g, e in zip(got, expected, strict=True):
        assert g["value"] == pytest.approx(e["value"], rel=1e-12, abs=1e-9)
        assert type(g["value"]) is type(e["value"])


@pytest.mark.parametrize("fn", ["avg", "min", "max", "count"])
async def test_aggregates_match_python(conn: psycopg.AsyncConnection[Any], fn: AggregateFn) -> None:
    device = f"AGG-{fn}"
    points = make_points(device, 400, metrics=("t", "h"))  # ~2.8 days, every ~10 minutes
    await store_points(conn, points)
    ranges = [(None, None), (BASE + 5_000.5, BASE + 200_000.25), (BASE + 7_200, BASE + 86_400)]
    for bucket in (60, 900, 3_600, 7_200, 86_400, 172_800):
        for start, end in ranges:
            got = await aggregate_points(
                conn, device, start=start, end=end, metrics=None, bucket_seconds=bucket, fn=fn
            )
            assert_same_aggregates(got, expected_aggregates(points, bucket, fn, start, end))
    got = await aggregate_points(conn, device, metrics=["h"], bucket_seconds=3_600, fn=fn)
    assert_same_aggregates(got, expected_aggregates(points, 3_600, fn, None, None, ["h"]))
    assert (
        await aggregate_points(conn, device, start=BASE, end=BASE, bucket_seconds=60, fn=fn) == []
    )


async def test_aggregate_arguments_are_checked(conn: psycopg.AsyncConnection[Any]) -> None:
    with pytest.raises(ValueError, match="fn"):
        await aggregate_points(conn, "X", bucket_seconds=60, fn="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bucket_seconds"):
        await aggregate_points(conn, "X", bucket_seconds=0, fn="avg")


@pytest.mark.parametrize("fn", ["avg", "min", "max", "count"])
async def test_aggregates_of_several_devices_within_their_windows(
    conn: psycopg.AsyncConnection[Any], fn: AggregateFn
) -> None:
    """Issue #20: a fleet's or a place's aggregate, each device's points counted only within
    its windows (a device may have several), per device or combined across devices."""
    a, b = f"GRP-A-{fn}", f"GRP-B-{fn}"
    pa, pb = make_points(a, 300, metrics=("t",)), make_points(b, 200, metrics=("t", "h"))
    await store_points(conn, pa + pb)
    windows = [
        (a, None, BASE + 50_000.5),
        (a, BASE + 90_000, BASE + 120_000),
        (b, BASE + 30_000, None),
        ("GRP-NOBODY", None, None),
    ]
    start, end = BASE + 10_000, BASE + 150_000

    def inside(points: list[DataPoint], device: str) -> list[DataPoint]:
        spans = [(lo, hi) for d, lo, hi in windows if d == device]
        return [
            p
            for p in points
            if any((lo is None or p.time >= lo) and (hi is None or p.time < hi) for lo, hi in spans)
        ]

    for bucket in (900, 3_600, 86_400):
        got = await aggregate_devices(
            conn, windows, start=start, end=end, bucket_seconds=bucket, fn=fn
        )
        expected = sorted(
            [
                {**row, "device": device}
                for device, points in ((a, inside(pa, a)), (b, inside(pb, b)))
                for row in expected_aggregates(points, bucket, fn, start, end)
            ],
            key=lambda r: (r["time"], r["device"], r["metric"]),
        )
        assert [r["device"] for r in got] == [r["device"] for r in expected]
        assert_same_aggregates(got, expected)
        for combine in ("avg", "min", "max"):
            combined = await aggregate_devices(
                conn,
                windows,
                start=start,
                end=end,
                metrics=["t"],
                bucket_seconds=bucket,
                fn=fn,
                combine=combine,  # type: ignore[arg-type]
            )
            values: dict[int, list[float]] = defaultdict(list)
            for row in expected:
                if row["metric"] == "t":
                    values[row["time"]].append(row["value"])
            pick: dict[str, Callable[[list[float]], float]] = {
                "avg": lambda v: sum(v) / len(v),
                "min": min,
                "max": max,
            }
            want = [
                {"time": t, "metric": "t", "value": pick[combine](values[t])}
                for t in sorted(values)
            ]
            if fn == "count" and combine == "avg":
                want = [{**row, "value": float(row["value"])} for row in want]
            assert_same_aggregates(combined, want)
    assert await aggregate_devices(conn, [], bucket_seconds=60, fn=fn) == []
    # Windows outside the range: nothing to read.
    assert await aggregate_devices(conn, windows, start=0, end=1, bucket_seconds=60, fn=fn) == []
    with pytest.raises(ValueError, match="combine"):
        await aggregate_devices(conn, windows, bucket_seconds=60, fn=fn, combine="sum")  # type: ignore[arg-type]


async def test_latest_points_of_several_devices(conn: psycopg.AsyncConnection[Any]) -> None:
    await store_points(
        conn,
        [
            DataPoint("LATS-1", 1000, "t", 1.0, "C"),
            DataPoint("LATS-1", 2000, "t", 2.0, "C"),
            DataPoint("LATS-2", 1500, "h", 40.0, "%"),
        ],
    )
    found = await latest_points_of(conn, ["LATS-1", "LATS-2", "LATS-NONE"])
    assert found == {
        "LATS-1": [DataPoint("LATS-1", 2000.0, "t", 2.0, "C")],
        "LATS-2": [DataPoint("LATS-2", 1500.0, "h", 40.0, "%")],
        "LATS-NONE": [],
    }
    assert found["LATS-1"] == await latest_points(conn, "LATS-1")
    assert await latest_points_of(conn, []) == {}


# --- the aggregate planner (pure) --------------------------------------------------------------

GRAINS = [("points_daily", 86_400), ("points_hourly", 3_600)]
bounds = st.one_of(st.none(), st.floats(min_value=0, max_value=4e9, allow_nan=False))


@given(start=bounds, end=bounds, n_grains=st.integers(0, 2))
def test_plan_ranges_tile_the_range(start: float | None, end: float | None, n_grains: int) -> None:
    grains = GRAINS[2 - n_grains :]
    if start is not None and end is not None and start >= end:
        return
    ranges = plan_ranges(start, end, grains)
    assert ranges[0][1] == start
    assert ranges[-1][2] == end
    for (_, _, hi), (_, lo, _) in zip(ranges, ranges[1:], strict=False):
        assert hi == lo  # contiguous, in order
    widths = dict(grains)
    for source, lo, hi in ranges:
        assert lo is None or hi is None or lo < hi
        if source != "points":  # whole buckets only
            assert lo is None or lo % widths[source] == 0
            assert hi is None or hi % widths[source] == 0
    assert sum(source == "points" for source, _, _ in ranges) <= (2 if grains else 1)


def test_plan_ranges_examples() -> None:
    # A subnormal start divides to 0.0: the first whole bucket must still start after it.
    assert plan_ranges(5e-324, 7200.0, GRAINS) == [
        ("points", 5e-324, 3600),
        ("points_hourly", 3600, 7200),
    ]
    assert plan_ranges(None, None, GRAINS) == [("points_daily", None, None)]
    assert plan_ranges(100.0, 200.0, GRAINS) == [("points", 100.0, 200.0)]
    assert plan_ranges(1800.0, 2 * 86_400 + 5400.5, GRAINS) == [
        ("points", 1800.0, 3600),
        ("points_hourly", 3600, 86_400),
        ("points_daily", 86_400, 2 * 86_400),
        ("points_hourly", 2 * 86_400, 2 * 86_400 + 3600),
        ("points", 2 * 86_400 + 3600, 2 * 86_400 + 5400.5),
    ]


async def test_pools_prepare_statements_unless_told_not_to(migrated_url: str) -> None:
    """A repeated statement is prepared on the connection (the downlink answer's halving);
    ``prepare=False`` (HIVEPIPE_DB_PREPARE=false, old PgBouncer) never prepares one."""
    from services.platform.db import open_pool

    for prepare, expected in ((True, True), (False, False)):
        pool = await open_pool(migrated_url, size=1, prepare=prepare)
        try:
            async with pool.connection() as conn:
                for _ in range(8):
                    await conn.execute("SELECT count(*) FROM devices WHERE id = %s", ("X",))
                cur = await conn.execute("SELECT count(*) AS n FROM pg_prepared_statements")
                row = await cur.fetchone()
                assert row is not None
                assert (row["n"] > 0) is expected
        finally:
            await pool.close()
