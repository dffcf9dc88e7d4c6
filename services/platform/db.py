"""Connection pool and the ordered SQL migration runner."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.platform import timescale
from services.platform.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Any fixed 64-bit number: serialises concurrent migration runs of several processes.
_MIGRATION_LOCK = 0x68697665706970


Pool = AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]

#: How long a request (an API call, a network callback) waits for a pooled connection before it
#: is answered 503: the database is away, or every connection is busy.
REQUEST_TIMEOUT = 5.0


def json_rows(rows: Any) -> str:
    """A batch's rows (or values) as one JSON parameter, for ``json_array_elements``.

    psycopg dumps a list parameter element by element in Python (with binary arrays too), which
    was most of the client's cost of a batch statement; orjson writes the whole batch in C,
    and PostgreSQL reads it no slower than arrays (issue #16). Values must be JSON's: strings,
    finite numbers, None (orjson writes a NaN or an infinity as null).
    """
    return orjson.dumps(rows).decode()


async def open_pool(
    url: str, *, size: int = 8, name: str = "hivepipe", prepare: bool = True
) -> Pool:
    """Open a pool of autocommit connections returning dict rows.

    ``prepare``: psycopg prepares a statement on a connection once it has run a few times
    (its default), which halves the Sigfox downlink answer here (1.6 ms instead of 3.2 ms,
    and 1.2 ms of client CPU instead of 2.0). ``prepare=False`` (``HIVEPIPE_DB_PREPARE=false``)
    keeps every statement unprepared, for a PgBouncer older than 1.21 in transaction mode.
    """
    pool = cast(
        Pool,
        AsyncConnectionPool(
            url,
            min_size=1,
            max_size=size,
            name=name,
            open=False,
            kwargs=connection_kwargs(prepare),
        ),
    )
    await pool.open(wait=True, timeout=30)
    return pool


def connection_kwargs(prepare: bool = True) -> dict[str, Any]:
    """The psycopg connection arguments of every pool (see :func:`open_pool`)."""
    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
    if not prepare:
        kwargs["prepare_threshold"] = None
    return kwargs


async def migrate(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    *,
    chunk_interval: str = "1 day",
    compress_after: str = "7 days",
    retention: str | None = None,
) -> list[str]:
    """Apply the SQL files of ``migrations/`` not yet recorded, in name order; then TimescaleDB.

    Idempotent and safe to run from several processes at once (an advisory lock serialises
    them). Returns the names applied by this call.
    """
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT name FROM schema_migrations")
        done = {str(row["name"]) for row in await cur.fetchall()}
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.name in done:
                continue
            log.info("applying migration %s", path.name)
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
            applied.append(path.name)
    await timescale.apply_timescale(
        conn, chunk_interval=chunk_interval, compress_after=compress_after, retention=retention
    )
    return applied


async def migrate_for(
    conn: psycopg.AsyncConnection[dict[str, Any]], settings: Settings
) -> list[str]:
    """:func:`migrate` with the TimescaleDB policies of ``settings`` (what every role runs)."""
    return await migrate(
        conn,
        chunk_interval=settings.chunk_interval,
        compress_after=settings.compress_after,
        retention=settings.retention,
    )
