"""The TimescaleDB layer over the core schema: detection, hypertable, compression, retention.

:func:`apply_timescale` is the migration runner's hook. It converges the database to the
configuration it is given (safe to run on every start): ``points`` becomes a hypertable with
compression (segment by device and metric, newest first) and a compression policy, an optional
retention policy, and the two continuous aggregates of
:mod:`services.platform.timescale_aggregates` with their refresh and compression policies.

On plain PostgreSQL (no ``timescaledb`` in ``pg_available_extensions``) it does nothing and returns
False; the query functions of :mod:`services.readings.aggregates` then answer from ``points``
alone.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg import AsyncConnection

from services.platform.timescale_aggregates import HOURLY, backfill, ensure_aggregates
from services.platform.timescale_policies import ensure_policy, exists, fetchone, schema_of

#: A retention shorter than this would let a refresh see raw data already dropped and erase the
#: matching aggregates (the aggregates are meant to outlive the raw points).
MIN_RETENTION: Final = "8 days"

#: Any fixed 64-bit number, distinct from the migration runner's: serialises concurrent runs.
_APPLY_LOCK: Final = 0x7473646268697665


async def has_timescale(conn: AsyncConnection[Any]) -> bool:
    """Whether the server can provide TimescaleDB (installed or installable)."""
    row = await fetchone(
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
        new_aggregates = not await exists(conn, HOURLY)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        if retention is not None:
            await _check_retention(conn, retention)
        await _hypertable(conn, chunk_interval)
        await _compression(conn, compress_after)
        await ensure_policy(
            conn,
            "points",
            "policy_retention",
            {"drop_after": retention} if retention is not None else None,
            add="SELECT add_retention_policy('points', drop_after => %(drop_after)s::interval)",
            remove="SELECT remove_retention_policy('points', if_exists => true)",
        )
        await ensure_aggregates(conn)
    if new_aggregates:
        await backfill(conn)
    return True


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
    row = await fetchone(
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
        (await schema_of(conn, "points"),),
    )
    if row is None or tuple(row) != ("device,metric", "time DESC"):
        await conn.execute(
            "ALTER TABLE points SET (timescaledb.compress,"
            " timescaledb.compress_segmentby = 'device, metric',"
            " timescaledb.compress_orderby = 'time DESC')"
        )
    await ensure_policy(
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


async def _check_retention(conn: AsyncConnection[Any], retention: str) -> None:
    row = await fetchone(conn, "SELECT %s::interval > %s::interval", (retention, MIN_RETENTION))
    if not (row and row[0]):
        raise ValueError(
            f"retention {retention!r} must be longer than {MIN_RETENTION} (the aggregates'"
            " refresh window), or refreshes would erase aggregates of dropped points"
        )
