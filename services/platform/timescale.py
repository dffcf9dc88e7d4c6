"""The TimescaleDB layer over the core schema: hypertable, compression, retention, aggregates.

:func:`apply_timescale` is the migration runner's hook. It converges the database to the
configuration it is given (safe to run on every start): ``points`` becomes a hypertable with
compression (segment by device and metric, newest first) and a compression policy, an optional
retention policy, and two continuous aggregates with refresh and compression policies:

* ``points_hourly`` (from ``points``) and ``points_daily`` (from ``points_hourly``), each with the
  columns ``bucket, device, metric, min, max, avg, sum, count``. ``sum`` and ``count`` are kept so
  that coarser buckets re-aggregate exactly: ``avg = sum(sum) / sum(count)``; an average of
  averages would weigh a sparse hour like a full one.
* Both are real-time (``materialized_only = false``): rows newer than the last refresh are
  computed from ``points`` at query time, so a query never misses recent data.

On plain PostgreSQL (no ``timescaledb`` in ``pg_available_extensions``) it does nothing and returns
False; the query functions of :mod:`services.readings.points` then answer from ``points`` alone.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

log = logging.getLogger(__name__)

HOURLY: Final = "points_hourly"
DAILY: Final = "points_daily"
#: Bucket width of each continuous aggregate, in seconds (finest last).
AGGREGATE_BUCKETS: Final = {DAILY: 86_400, HOURLY: 3_600}

# Refresh windows. start_offset bounds how late a point may arrive and still reach the aggregates
# through the policies (older late data needs a manual refresh_continuous_aggregate); the policies
# only recompute buckets that were invalidated, so a wide window costs little. The daily window
# reaches one bucket further than the hourly one so that the day holding "now - 7 days" is redone.
_REFRESH: Final = {
    HOURLY: {"start_offset": "7 days", "end_offset": "1 hour", "schedule_interval": "30 minutes"},
    DAILY: {"start_offset": "8 days", "end_offset": "1 day", "schedule_interval": "1 hour"},
}
# Aggregates are compressed once they are well outside their refresh window (a requirement of
# TimescaleDB: compress_after must exceed the refresh policy's start_offset).
_AGGREGATE_COMPRESS_AFTER: Final = {HOURLY: "30 days", DAILY: "90 days"}
#: A retention shorter than this would let a refresh see raw data already dropped and erase the
#: matching aggregates (the aggregates are meant to outlive the raw points).
MIN_RETENTION: Final = "8 days"

#: Any fixed 64-bit number, distinct from the migration runner's: serialises concurrent runs.
_APPLY_LOCK: Final = 0x7473646268697665

_HOURLY_SQL: Final = """
CREATE MATERIALIZED VIEW IF NOT EXISTS points_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, device, metric,
       min(value) AS min, max(value) AS max, avg(value) AS avg,
       sum(value) AS sum, count(*) AS count
FROM points
GROUP BY bucket, device, metric
WITH NO DATA
"""

# Hierarchical: a day is re-aggregated from its 24 hourly rows, not from the raw points.
_DAILY_SQL: Final = """
CREATE MATERIALIZED VIEW IF NOT EXISTS points_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, device, metric,
       min(min) AS min, max(max) AS max, sum(sum) / sum(count) AS avg,
       sum(sum) AS sum, sum(count)::bigint AS count
FROM points_hourly
GROUP BY 1, device, metric
WITH NO DATA
"""


async def has_timescale(conn: AsyncConnection[Any]) -> bool:
    """Whether the server can provide TimescaleDB (installed or installable)."""
    row = await _fetchone(
        conn, "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
    )
    return bool(row and row[0])


async def apply_timescale(
    conn: AsyncConnection[Any],
    *,
    chunk_interval: str = "1 day",
    compress_after: str = "7 days",
    retention: str | None = None,
) -> bool:
    """Converge ``points`` and its aggregates to this configuration; False on plain PostgreSQL.

    Intervals are PostgreSQL interval strings. ``retention=None`` means keep raw points forever
    (an existing retention policy is removed). Needs ``0001_core.sql`` applied first. Runs in one
    transaction (a savepoint when the caller already has one open), so a failure changes nothing.
    """
    if not await has_timescale(conn):
        return False
    async with conn.transaction():
        # Processes starting together would otherwise race to add the same policies.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_APPLY_LOCK,))
        new_aggregates = not await _exists(conn, HOURLY)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        if retention is not None:
            await _check_retention(conn, retention)
        await _hypertable(conn, chunk_interval)
        await _compression(conn, compress_after)
        await _ensure_policy(
            conn,
            "points",
            "policy_retention",
            {"drop_after": retention} if retention is not None else None,
            add="SELECT add_retention_policy('points', drop_after => %(drop_after)s::interval)",
            remove="SELECT remove_retention_policy('points', if_exists => true)",
        )
        await _aggregates(conn)
    if new_aggregates:
        await _backfill(conn)
    return True


async def _backfill(conn: AsyncConnection[Any]) -> None:
    """Materialise what ``points`` already holds into freshly created aggregates.

    The refresh policies only look back ``start_offset``; without this, points older than that
    (a table converted with its data) would never reach the aggregates, and real-time aggregation
    would not show them either once the policies have moved the watermark past them.
    """
    if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        log.warning(
            "continuous aggregates created inside a transaction: not backfilled; run"
            " CALL refresh_continuous_aggregate('%s', NULL, NULL) and then for '%s'",
            HOURLY,
            DAILY,
        )
        return
    await _refresh(conn, None, None)


async def refresh_aggregates(conn: AsyncConnection[Any], start: datetime, end: datetime) -> bool:
    """Recompute the continuous aggregates' buckets between ``start`` and ``end`` (widened to
    whole days), for points deleted or changed there; False when there are no aggregates.

    ``CALL refresh_continuous_aggregate`` cannot run in a transaction: give an autocommit
    connection outside one. Raises what TimescaleDB raises."""
    if not await _exists(conn, HOURLY):
        return False
    day = timedelta(days=1)
    await _refresh(conn, start - day, end + day)
    return True


async def _refresh(
    conn: AsyncConnection[Any], start: datetime | None, end: datetime | None
) -> None:
    """Both aggregates between ``start`` and ``end`` (None: unbounded)."""
    for view in (HOURLY, DAILY):  # daily is computed from hourly: refresh hourly first
        await conn.execute(
            sql.SQL(
                "CALL refresh_continuous_aggregate({}, %s::timestamptz, %s::timestamptz)"
            ).format(sql.Literal(view)),
            (start, end),
        )


async def _hypertable(conn: AsyncConnection[Any], chunk_interval: str) -> None:
    await conn.execute(
        "SELECT create_hypertable('points', by_range('time', %s::interval),"
        " migrate_data => true, if_not_exists => true)",
        (chunk_interval,),
    )
    # create_hypertable leaves an existing hypertable alone; this applies a changed interval to
    # the chunks created from now on.
    await conn.execute("SELECT set_chunk_time_interval('points', %s::interval)", (chunk_interval,))


async def _compression(conn: AsyncConnection[Any], compress_after: str) -> None:
    row = await _fetchone(
        conn,
        """
        SELECT coalesce(string_agg(attname, ',' ORDER BY segmentby_column_index)
                        FILTER (WHERE segmentby_column_index IS NOT NULL), ''),
               coalesce(string_agg(attname || CASE WHEN orderby_asc THEN ' ASC' ELSE ' DESC' END,
                                   ',' ORDER BY orderby_column_index)
                        FILTER (WHERE orderby_column_index IS NOT NULL), '')
        FROM timescaledb_information.compression_settings
        WHERE hypertable_name = 'points' AND hypertable_schema = %s
        """,
        (await _schema_of(conn, "points"),),
    )
    if row is None or tuple(row) != ("device,metric", "time DESC"):
        await conn.execute(
            "ALTER TABLE points SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'device, metric',"
            " timescaledb.compress_orderby = 'time DESC')"
        )
    await _ensure_policy(
        conn,
        "points",
        "policy_compression",
        {"compress_after": compress_after},
        add=(
            "SELECT add_compression_policy('points',"
            " compress_after => %(compress_after)s::interval)"
        ),
        remove="SELECT remove_compression_policy('points', if_exists => true)",
    )


async def _aggregates(conn: AsyncConnection[Any]) -> None:
    await conn.execute(_HOURLY_SQL)
    await conn.execute(_DAILY_SQL)
    for view in (HOURLY, DAILY):
        refresh = _REFRESH[view]
        await _ensure_policy(
            conn,
            view,
            "policy_refresh_continuous_aggregate",
            {"start_offset": refresh["start_offset"], "end_offset": refresh["end_offset"]},
            add=(
                f"SELECT add_continuous_aggregate_policy('{view}',"
                " start_offset => %(start_offset)s::interval,"
                " end_offset => %(end_offset)s::interval,"
                f" schedule_interval => '{refresh['schedule_interval']}'::interval)"
            ),
            remove=f"SELECT remove_continuous_aggregate_policy('{view}', if_exists => true)",
        )
        enabled = await _fetchone(
            conn,
            "SELECT compression_enabled FROM timescaledb_information.continuous_aggregates"
            " WHERE view_name = %s AND view_schema = %s",
            (view, await _schema_of(conn, view)),
        )
        if not (enabled and enabled[0]):
            await conn.execute(f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.compress = true)")
        await _ensure_policy(
            conn,
            view,
            "policy_compression",
            {"compress_after": _AGGREGATE_COMPRESS_AFTER[view]},
            add=(
                f"SELECT add_compression_policy('{view}',"
                " compress_after => %(compress_after)s::interval)"
            ),
            remove=f"SELECT remove_compression_policy('{view}', if_exists => true)",
        )


async def _ensure_policy(
    conn: AsyncConnection[Any],
    relation: str,
    proc_name: str,
    want: dict[str, str] | None,
    *,
    add: str,
    remove: str,
) -> None:
    """Make the policy ``proc_name`` on ``relation`` match ``want`` (None: no such policy).

    Policies are compared on the interval settings in ``want`` (as intervals, so "1 day" equals
    "24 hours"); a differing policy is replaced, a matching one is left alone.
    """
    job = await _fetchone(
        conn,
        """
        SELECT j.config
        FROM timescaledb_information.jobs j
        LEFT JOIN timescaledb_information.continuous_aggregates ca
          ON ca.materialization_hypertable_schema = j.hypertable_schema
         AND ca.materialization_hypertable_name = j.hypertable_name
        WHERE j.proc_name = %s
          AND coalesce(ca.view_schema, j.hypertable_schema) = %s
          AND coalesce(ca.view_name, j.hypertable_name) = %s
        """,
        (proc_name, await _schema_of(conn, relation), relation),
    )
    if job is None and want is None:
        return
    if job is not None and want is not None:
        config: dict[str, Any] = job[0] or {}
        if await _same_intervals(conn, config, want):
            return
    if job is not None:
        await conn.execute(remove)
    if want is not None:
        await conn.execute(add, want)


async def _same_intervals(
    conn: AsyncConnection[Any], config: dict[str, Any], want: dict[str, str]
) -> bool:
    for key, value in want.items():
        have = config.get(key)
        if have is None:
            return False
        row = await _fetchone(conn, "SELECT %s::interval = %s::interval", (str(have), value))
        if not (row and row[0]):
            return False
    return True


async def _check_retention(conn: AsyncConnection[Any], retention: str) -> None:
    row = await _fetchone(conn, "SELECT %s::interval > %s::interval", (retention, MIN_RETENTION))
    if not (row and row[0]):
        raise ValueError(
            f"retention {retention!r} must be longer than {MIN_RETENTION} (the aggregates'"
            " refresh window), or refreshes would erase aggregates of dropped points"
        )


async def _exists(conn: AsyncConnection[Any], relation: str) -> bool:
    row = await _fetchone(conn, "SELECT to_regclass(%s) IS NOT NULL", (relation,))
    return bool(row and row[0])


async def _schema_of(conn: AsyncConnection[Any], relation: str) -> str:
    row = await _fetchone(
        conn,
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(%s)",
        (relation,),
    )
    if row is None:
        raise LookupError(f"relation {relation!r} not found on the search_path")
    return str(row[0])


async def _fetchone(
    conn: AsyncConnection[Any], query: str, params: tuple[Any, ...] | None = None
) -> tuple[Any, ...] | None:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()
