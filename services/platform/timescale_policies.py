"""TimescaleDB background-job policies made to match a wanted configuration, and the catalog
lookups the TimescaleDB layer needs (does a relation exist, in which schema).

A policy (compression, retention, continuous-aggregate refresh) is found in
``timescaledb_information.jobs`` by its procedure and relation, compared on its interval settings
(as intervals: "1 day" equals "24 hours"), and replaced only when it differs.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row


async def ensure_policy(
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
    job = await fetchone(
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
        (proc_name, await schema_of(conn, relation), relation),
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
        row = await fetchone(conn, "SELECT %s::interval = %s::interval", (str(have), value))
        if not (row and row[0]):
            return False
    return True


async def exists(conn: AsyncConnection[Any], relation: str) -> bool:
    """Whether ``relation`` is found on the ``search_path``."""
    row = await fetchone(conn, "SELECT to_regclass(%s) IS NOT NULL", (relation,))
    return bool(row and row[0])


async def schema_of(conn: AsyncConnection[Any], relation: str) -> str:
    """The schema of ``relation`` as found on the ``search_path``; LookupError if it is not."""
    row = await fetchone(
        conn,
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(%s)",
        (relation,),
    )
    if row is None:
        raise LookupError(f"relation {relation!r} not found on the search_path")
    return str(row[0])


async def fetchone(
    conn: AsyncConnection[Any], query: str, params: tuple[Any, ...] | None = None
) -> tuple[Any, ...] | None:
    """The query's first row as a tuple (whatever the connection's row factory), or None."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()
