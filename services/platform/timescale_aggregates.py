"""The continuous aggregates over ``points``: their definitions and policies, their backfill when
they are created, and their refresh after points are deleted or changed.

* ``points_hourly`` (from ``points``) and ``points_daily`` (from ``points_hourly``), each with the
  columns ``bucket, device, metric, min, max, avg, sum, count``. ``sum`` and ``count`` are kept so
  that coarser buckets re-aggregate exactly: ``avg = sum(sum) / sum(count)``; an average of
  averages would weigh a sparse hour like a full one.
* Both are real-time (``materialized_only = false``): rows newer than the last refresh are
  computed from ``points`` at query time, so a query never misses recent data.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg import AsyncConnection, sql
from psycopg.pq import TransactionStatus

from services.platform.timescale_policies import ensure_policy, exists, fetchone, schema_of

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


async def ensure_aggregates(conn: AsyncConnection[Any]) -> None:
    """Create both aggregates if missing and converge their refresh and compression policies."""
    await conn.execute(_HOURLY_SQL)
    await conn.execute(_DAILY_SQL)
    for view in (HOURLY, DAILY):
        refresh = _REFRESH[view]
        await ensure_policy(
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
        enabled = await fetchone(
            conn,
            "SELECT compression_enabled FROM timescaledb_information.continuous_aggregates"
            " WHERE view_name = %s AND view_schema = %s",
            (view, await schema_of(conn, view)),
        )
        if not (enabled and enabled[0]):
            await conn.execute(f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.compress = true)")
        await ensure_policy(
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


async def backfill(conn: AsyncConnection[Any]) -> None:
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
    if not await exists(conn, HOURLY):
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
