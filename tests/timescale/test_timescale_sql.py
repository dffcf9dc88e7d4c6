"""The TimescaleDB layer on a real TimescaleDB (the PGlite build, see tests/timescale_server.py).

Checks that :func:`apply_timescale` converges (hypertable, compression, retention, continuous
aggregates and their policies), that storing works on compressed chunks, and that every query
function answers exactly as on plain PostgreSQL, whose results the integration tests check
against Python. PGlite has one connection, so the whole module shares one session.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from services.platform.events import DataPoint
from services.platform.timescale import apply_timescale, has_timescale
from services.readings.aggregates import aggregate_devices, aggregate_points
from services.readings.paging import query_points
from services.readings.points import latest_points, store_points
from services.readings.state import latest_state, store_state
from tests.conftest import drop_schema, new_schema
from tests.timescale_server import TimescaleUnavailable, aconnect, start_server

pytestmark = pytest.mark.timescale

CORE_SQL = Path(__file__).resolve().parents[2] / "services/platform/migrations/0001_core.sql"
SCHEMA = "ts_points"
DEVICES = ("TS-A", "TS-B", "TS-C")
DAY = 86_400
NOW = math.floor(time.time() / 60) * 60 + 17.25  # on the server's clock: policies use now()

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture(scope="session")
def timescale_url() -> Iterator[str]:
    try:
        server = start_server()
    except TimescaleUnavailable as exc:
        pytest.skip(str(exc))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
async def ts(timescale_url: str) -> AsyncIterator[Conn]:
    conn = await aconnect(timescale_url)
    ident = sql.Identifier(SCHEMA)
    await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
    # The extension's functions live in public, hence the second entry.
    await conn.execute(sql.SQL("SET search_path = {}, public").format(ident))
    await conn.execute(CORE_SQL.read_text())
    yield conn
    await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
    await conn.close()


@pytest.fixture(scope="module")
async def pg(pg_server: str) -> AsyncIterator[Conn]:
    """The same schema on the plain PostgreSQL, as the reference."""
    name, url = new_schema(pg_server)
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(CORE_SQL.read_text())
            yield conn
    finally:
        drop_schema(pg_server, name)


async def rows(conn: Conn, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def policies(conn: Conn) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(relation, proc_name): config}`` of the jobs on our schema's tables and aggregates."""
    found = await rows(
        conn,
        """
        SELECT coalesce(ca.view_name, j.hypertable_name), j.proc_name, j.config
        FROM timescaledb_information.jobs j
        LEFT JOIN timescaledb_information.continuous_aggregates ca
          ON ca.materialization_hypertable_schema = j.hypertable_schema
         AND ca.materialization_hypertable_name = j.hypertable_name
        WHERE coalesce(ca.view_schema, j.hypertable_schema) = %s
        """,
        (SCHEMA,),
    )
    return {(r[0], r[1]): r[2] for r in found}


async def job_ids(conn: Conn, schema: str = SCHEMA) -> dict[tuple[str, str], int]:
    found = await rows(
        conn,
        """
        SELECT coalesce(ca.view_name, j.hypertable_name), j.proc_name, j.job_id
        FROM timescaledb_information.jobs j
        LEFT JOIN timescaledb_information.continuous_aggregates ca
          ON ca.materialization_hypertable_schema = j.hypertable_schema
         AND ca.materialization_hypertable_name = j.hypertable_name
        WHERE coalesce(ca.view_schema, j.hypertable_schema) = %s
        """,
        (schema,),
    )
    return {(r[0], r[1]): r[2] for r in found}


async def refresh_aggregates(conn: Conn) -> None:
    for view in ("points_hourly", "points_daily"):  # daily reads hourly: hourly first
        await conn.execute(
            sql.SQL("CALL refresh_continuous_aggregate({}, NULL, NULL)").format(
                sql.Literal(f"{SCHEMA}.{view}")
            )
        )


EXPECTED_POLICIES = {
    ("points", "policy_compression"): {"compress_after": "7 days"},
    ("points_hourly", "policy_refresh_continuous_aggregate"): {
        "start_offset": "7 days",
        "end_offset": "01:00:00",
    },
    ("points_daily", "policy_refresh_continuous_aggregate"): {
        "start_offset": "8 days",
        "end_offset": "1 day",
    },
    ("points_hourly", "policy_compression"): {"compress_after": "30 days"},
    ("points_daily", "policy_compression"): {"compress_after": "90 days"},
}


def interval_settings(found: dict[tuple[str, str], dict[str, Any]]) -> dict[Any, Any]:
    keep = ("compress_after", "drop_after", "start_offset", "end_offset")
    return {k: {n: v for n, v in cfg.items() if n in keep} for k, cfg in found.items()}


# --- the layer ---------------------------------------------------------------------------------


async def test_apply_timescale_is_idempotent(ts: Conn) -> None:
    assert await has_timescale(ts)
    assert await apply_timescale(ts)
    first = await job_ids(ts)
    assert await apply_timescale(ts)  # every start runs it again: nothing changes
    assert await job_ids(ts) == first
    assert interval_settings(await policies(ts)) == EXPECTED_POLICIES

    hypertables = await rows(
        ts,
        "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = %s",
        (SCHEMA,),
    )
    assert hypertables == [("points", True)]
    dims = await rows(
        ts,
        "SELECT column_name, time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = %s AND hypertable_name = 'points'",
        (SCHEMA,),
    )
    assert [(c, i.total_seconds()) for c, i in dims] == [("time", DAY)]
    settings = await rows(
        ts,
        "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc"
        " FROM timescaledb_information.compression_settings"
        " WHERE hypertable_schema = %s AND hypertable_name = 'points' ORDER BY attname",
        (SCHEMA,),
    )
    assert settings == [
        ("device", 1, None, None),
        ("metric", 2, None, None),
        ("time", None, 1, False),
    ]
    aggregates = await rows(
        ts,
        "SELECT view_name, materialized_only, compression_enabled"
        " FROM timescaledb_information.continuous_aggregates WHERE view_schema = %s"
        " ORDER BY view_name",
        (SCHEMA,),
    )
    assert aggregates == [("points_daily", False, True), ("points_hourly", False, True)]


async def test_apply_timescale_converges_to_its_arguments(ts: Conn) -> None:
    assert await apply_timescale(
        ts, chunk_interval="12 hours", compress_after="3 days", retention="400 days"
    )
    found = interval_settings(await policies(ts))
    assert found[("points", "policy_compression")] == {"compress_after": "3 days"}
    assert await chunk_interval(ts) == 12 * 3600
    assert found[("points", "policy_retention")] == {"drop_after": "400 days"}
    before = await job_ids(ts)
    # Equal intervals written differently are left alone.
    assert await apply_timescale(
        ts, chunk_interval="12 hours", compress_after="72 hours", retention="400 days"
    )
    assert await job_ids(ts) == before

    # A retention inside the aggregates' refresh window is refused, and changes nothing.
    with pytest.raises(ValueError, match="retention"):
        await apply_timescale(ts, compress_after="5 days", retention="2 days")
    assert await job_ids(ts) == before

    assert await apply_timescale(ts)  # back to the defaults: retention removed
    assert interval_settings(await policies(ts)) == EXPECTED_POLICIES
    assert await chunk_interval(ts) == DAY


async def chunk_interval(conn: Conn) -> float:
    dims = await rows(
        conn,
        "SELECT time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_schema = %s AND hypertable_name = 'points'",
        (SCHEMA,),
    )
    return float(dims[0][0].total_seconds())


async def test_apply_timescale_on_existing_points_backfills_the_aggregates(ts: Conn) -> None:
    """Converting a table with data: old points reach the aggregates, not only the last week."""
    other = sql.Identifier("ts_backfill")
    await ts.execute(sql.SQL("CREATE SCHEMA {}").format(other))
    try:
        await ts.execute(sql.SQL("SET search_path = {}, public").format(other))
        await ts.execute(CORE_SQL.read_text())
        old = [DataPoint("BF", NOW - i * 3 * 3600, "t", float(i), None) for i in range(240)]  # 30 d
        await store_points(ts, old)
        assert await apply_timescale(ts)
        job = (await job_ids(ts, "ts_backfill"))[
            ("points_hourly", "policy_refresh_continuous_aggregate")
        ]
        await ts.execute("CALL run_job(%s)", (job,))  # moves the watermark to about now
        # What is left once the raw points are gone is what was materialised.
        await ts.execute("DELETE FROM points")
        (hourly,) = await rows(ts, "SELECT sum(count) FROM points_hourly")
        (daily,) = await rows(ts, "SELECT sum(count) FROM points_daily")
        assert hourly == daily == (len(old),)
    finally:
        await ts.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(SCHEMA)))
        await ts.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(other))


# --- the same data on both databases -----------------------------------------------------------


def dataset() -> list[DataPoint]:
    """40 days of two metrics for three devices, every 30 minutes, times not on whole seconds."""
    points = []
    for d, device in enumerate(DEVICES):
        for i in range(40 * 48):
            t = round(NOW - i * 1800 - d * 7.5 - (i % 5) * 0.25, 6)
            points.append(
                DataPoint(device, t, "temperature", round(20 + math.sin(i / 9) * 5, 3), "°C")
            )
            if i % 3:  # sparser: hours with one point and hours with two, so avg weighting shows
                points.append(DataPoint(device, t, "humidity", float((i * 37) % 100), "%"))
    return points


@pytest.fixture(scope="module")
async def loaded(ts: Conn, pg: Conn) -> list[DataPoint]:
    assert await apply_timescale(ts)
    points = dataset()
    for i in range(0, len(points), 1000):
        batch = points[i : i + 1000]
        assert await store_points(ts, batch) == await store_points(pg, batch) == len(batch)
    await refresh_aggregates(ts)
    ids = await job_ids(ts)
    # No background workers in PGlite: run each policy once by hand.
    for name in [
        ("points", "policy_compression"),
        ("points_hourly", "policy_refresh_continuous_aggregate"),
        ("points_daily", "policy_refresh_continuous_aggregate"),
        ("points_hourly", "policy_compression"),
        ("points_daily", "policy_compression"),
    ]:
        await ts.execute("CALL run_job(%s)", (ids[name],))
    return points


async def test_policies_compress_old_chunks(ts: Conn, loaded: list[DataPoint]) -> None:
    chunks = await rows(
        ts,
        "SELECT is_compressed, range_end < now() - INTERVAL '7 days'"
        " FROM timescaledb_information.chunks WHERE hypertable_schema = %s"
        " AND hypertable_name = 'points'",
        (SCHEMA,),
    )
    assert len(chunks) >= 40
    assert all(compressed == old for compressed, old in chunks)
    hourly_chunks = await rows(
        ts,
        "SELECT bool_or(is_compressed) FROM timescaledb_information.chunks c"
        " JOIN timescaledb_information.continuous_aggregates ca"
        "   ON ca.materialization_hypertable_schema = c.hypertable_schema"
        "  AND ca.materialization_hypertable_name = c.hypertable_name"
        " WHERE ca.view_schema = %s AND ca.view_name = 'points_hourly'",
        (SCHEMA,),
    )
    assert hourly_chunks == [(True,)]


async def test_store_into_compressed_chunks(ts: Conn, pg: Conn, loaded: list[DataPoint]) -> None:
    old = [p for p in loaded if p.time < NOW - 20 * DAY][:50]
    late = [DataPoint(p.device, p.time + 60, p.metric, p.value + 1, p.unit) for p in old]
    assert await store_points(ts, old) == 0  # duplicates found inside compressed chunks
    assert await store_points(ts, late) == await store_points(pg, late) == len(late)
    assert await store_points(ts, late + old) == 0
    await refresh_aggregates(ts)  # the late points invalidated compressed aggregate chunks
    for conn in (ts, pg):
        assert await store_state(conn, "TS-A", NOW, {"relay": [1, 0, 1]})
        assert not await store_state(conn, "TS-A", NOW - 1, {"relay": [0]})
    assert await latest_state(ts, "TS-A") == await latest_state(pg, "TS-A")


async def test_latest_matches(ts: Conn, pg: Conn, loaded: list[DataPoint]) -> None:
    for device in (*DEVICES, "NONE"):
        assert await latest_points(ts, device) == await latest_points(pg, device)
    assert len(await latest_points(ts, "TS-A")) == 2


async def walk(conn: Conn, device: str, **kwargs: Any) -> list[DataPoint]:
    seen: list[DataPoint] = []
    cursor = None
    while True:
        page, cursor = await query_points(conn, device, cursor=cursor, **kwargs)
        seen += page
        if cursor is None:
            return seen


async def test_pages_match(ts: Conn, pg: Conn, loaded: list[DataPoint]) -> None:
    cases: list[dict[str, Any]] = [
        {"order": "desc", "limit": 500},
        {"order": "asc", "limit": 333},
        {"order": "desc", "limit": 50, "metrics": ["humidity"], "start": NOW - 10.5 * DAY},
        {"order": "asc", "limit": 70, "start": NOW - 25 * DAY, "end": NOW - 3.25 * DAY},
    ]
    for case in cases:
        got = await walk(ts, "TS-B", **case)
        assert got == await walk(pg, "TS-B", **case)
        assert got
    # A cursor is portable: it names a position, not a server-side state.
    page, cursor = await query_points(ts, "TS-C", limit=25)
    assert (await query_points(ts, "TS-C", limit=25, cursor=cursor)) == (
        await query_points(pg, "TS-C", limit=25, cursor=cursor)
    )


def same(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [(r["time"], r["metric"]) for r in got] == [(r["time"], r["metric"]) for r in expected]
    for g, e in zip(got, expected, strict=True):
        assert type(g["value"]) is type(e["value"])
        assert g["value"] == pytest.approx(e["value"], rel=1e-12, abs=1e-9)


async def test_aggregates_match(ts: Conn, pg: Conn, loaded: list[DataPoint]) -> None:
    midnight = math.floor(NOW / DAY) * DAY
    ranges = [
        (None, None),
        (NOW - 33.3 * DAY + 0.5, NOW - 2.1 * DAY),  # ragged ends: raw + hourly + daily
        (midnight - 21 * DAY, midnight - 2 * DAY),  # whole days
        (NOW - 5 * 3600 - 11, None),  # recent, not materialised: real-time aggregation
    ]
    for bucket in (600, 3600, 2 * 3600, DAY, 3 * DAY):
        for fn in ("avg", "min", "max", "count"):
            for start, end in ranges:
                kwargs: dict[str, Any] = {
                    "start": start,
                    "end": end,
                    "bucket_seconds": bucket,
                    "fn": fn,
                }
                got = await aggregate_points(ts, "TS-A", **kwargs)
                same(got, await aggregate_points(pg, "TS-A", **kwargs))
                assert got
    kwargs = {"metrics": ["humidity"], "bucket_seconds": DAY, "fn": "avg"}
    same(await aggregate_points(ts, "TS-C", **kwargs), await aggregate_points(pg, "TS-C", **kwargs))


async def test_aggregates_of_several_devices_match(
    ts: Conn, pg: Conn, loaded: list[DataPoint]
) -> None:
    """Issue #20: a fleet's or a place's aggregate (several devices, each within its windows,
    per device or combined) reads the continuous aggregates and still matches ``points``."""
    midnight = math.floor(NOW / DAY) * DAY
    windows = [
        ("TS-A", None, NOW - 20.25 * DAY),
        ("TS-A", midnight - 10 * DAY, midnight - 5 * DAY),
        ("TS-B", NOW - 15 * DAY + 17.5, None),
        ("TS-C", None, None),
    ]
    for bucket in (3600, DAY):
        for fn in ("avg", "min", "max", "count"):
            for combine in (None, "avg", "min", "max"):
                kwargs: dict[str, Any] = {
                    "start": NOW - 30 * DAY + 0.5,
                    "bucket_seconds": bucket,
                    "fn": fn,
                    "combine": combine,
                }
                got = await aggregate_devices(ts, windows, **kwargs)
                expected = await aggregate_devices(pg, windows, **kwargs)
                assert [r.get("device") for r in got] == [r.get("device") for r in expected]
                same(got, expected)
                assert got


async def test_aggregates_are_read_from_the_continuous_aggregates(ts: Conn) -> None:
    """Raw points deleted behind the aggregates' back still count until the next refresh."""
    hour = math.floor((NOW - 3 * DAY) / 3600) * 3600
    points = [DataPoint("TS-CAGG", hour + 60 * i + 0.5, "t", float(i), None) for i in range(30)]
    await store_points(ts, points)
    await refresh_aggregates(ts)
    await ts.execute("DELETE FROM points WHERE device = 'TS-CAGG'")
    for bucket in (3600, DAY):  # whole hours / days: from points_hourly / points_daily
        got = await aggregate_points(ts, "TS-CAGG", bucket_seconds=bucket, fn="count")
        assert [r["value"] for r in got] == [30]
    assert await aggregate_points(ts, "TS-CAGG", bucket_seconds=1800, fn="count") == []
    # Not a whole hour: the ragged ends come from points, which no longer has them.
    got = await aggregate_points(ts, "TS-CAGG", start=hour + 1, bucket_seconds=3600, fn="count")
    assert got == []
    await refresh_aggregates(ts)
    assert await aggregate_points(ts, "TS-CAGG", bucket_seconds=DAY, fn="count") == []


async def test_deleting_a_device_erases_its_points_and_its_aggregates(ts: Conn) -> None:
    """Whoever registers the id next must not read the deleted device's figures, not even the
    materialised hours and days of the continuous aggregates."""
    from services.devices.store import delete_device

    [(owner,)] = await rows(ts, "INSERT INTO users (username) VALUES ('ts-del') RETURNING id")
    await ts.execute(
        "INSERT INTO devices (id, model, network, owner_id) VALUES ('TS-DEL', 'json', 'mqtt', %s)",
        (owner,),
    )
    hour = math.floor((NOW - 3 * DAY) / 3600) * 3600
    points = [DataPoint("TS-DEL", hour + 60 * i + 0.5, "t", float(i), None) for i in range(30)]
    await store_points(ts, points)
    await refresh_aggregates(ts)
    assert [
        r["value"] for r in await aggregate_points(ts, "TS-DEL", bucket_seconds=DAY, fn="count")
    ] == [30]
    ts.row_factory = dict_row  # as the API's connections return rows
    try:
        await delete_device(ts, "TS-DEL")  # type: ignore[arg-type]
    finally:
        ts.row_factory = tuple_row
    assert await rows(ts, "SELECT count(*) FROM points WHERE device = 'TS-DEL'") == [(0,)]
    for bucket in (3600, DAY):  # materialised buckets too, without waiting for a policy
        assert await aggregate_points(ts, "TS-DEL", bucket_seconds=bucket, fn="count") == []
