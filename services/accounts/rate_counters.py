"""Rate-limit counters in PostgreSQL (the ``rate_limits`` table), as a ``limits`` async storage.

Several API processes must count an account's requests together; this storage lets them do so
in the database they already share, with nothing else to run. Each :meth:`incr` is one atomic
upsert: it starts the window over once its ``expires`` has passed (PostgreSQL's clock, the
same for every process), else adds to it. :meth:`hit` returns the count and the window's end
together, so a request costs one round trip per window.

``HIVEPIPE_RATE_LIMIT_STORAGE=postgresql://`` (no host) counts in hivepipe's own database,
through the API process's pool (:class:`PostgresStorage` given ``pool``); a full URL
(``postgresql://host/db``) opens a pool of its own on that database, which must hold the
``rate_limits`` table (hivepipe's migrations).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from limits.aio.storage import Storage
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.platform import connection_kwargs

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]

#: The ``limits`` schemes of this storage (``async+`` is what the async API asks for).
SCHEMES = ("async+postgresql", "async+postgres")

_HIT = """
INSERT INTO rate_limits AS r (key, count, expires)
VALUES (%(key)s, %(amount)s, now() + make_interval(secs => %(expiry)s))
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN r.expires <= now() THEN excluded.count ELSE r.count + excluded.count END,
    expires = CASE WHEN r.expires <= now() THEN excluded.expires ELSE r.expires END
RETURNING count, extract(epoch FROM expires)::float8 AS expires
"""


def uses_own_database(setting: str) -> bool:
    """Whether ``HIVEPIPE_RATE_LIMIT_STORAGE`` names hivepipe's own database
    (``postgresql://`` without a host): the API's pool then serves the counters."""
    scheme, _, rest = setting.removeprefix("async+").partition("://")
    return scheme in ("postgresql", "postgres") and not rest


class PostgresStorage(Storage):
    """Fixed-window counters in the ``rate_limits`` table (the only strategy hivepipe uses)."""

    STORAGE_SCHEME = list(SCHEMES)

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        pool: Pool | None = None,
        **options: float | str | bool,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._pool = pool
        self._own_pool = pool is None
        self._url = (uri or "").removeprefix("async+")
        self._lock = asyncio.Lock()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (psycopg.Error, OSError)

    async def _connected(self) -> Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    assert self._url, "a PostgreSQL URL or a pool is required"
                    pool: Pool = AsyncConnectionPool(
                        self._url,
                        min_size=1,
                        max_size=4,
                        name="rate-limits",
                        open=False,
                        kwargs=connection_kwargs(),
                    )
                    await pool.open(wait=True, timeout=10)
                    self._pool = pool
        return self._pool

    async def hit(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        """Count ``amount`` in ``key``'s window (``expiry`` seconds long, started now when the
        last one has ended); returns the count and the window's end (Unix time)."""
        pool = await self._connected()
        async with pool.connection() as conn:
            cur = await conn.execute(_HIT, {"key": key, "amount": amount, "expiry": expiry})
            row = await cur.fetchone()
        assert row is not None
        return int(row["count"]), float(row["expires"])

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        count, _ = await self.hit(key, expiry, amount)
        return count

    async def get(self, key: str) -> int:
        row = await self._one(
            "SELECT count FROM rate_limits WHERE key = %s AND expires > now()", key
        )
        return int(row["count"]) if row else 0

    async def get_expiry(self, key: str) -> float:
        row = await self._one(
            "SELECT extract(epoch FROM expires)::float8 AS expires FROM rate_limits"
            " WHERE key = %s AND expires > now()",
            key,
        )
        return float(row["expires"]) if row else time.time()

    async def check(self) -> bool:
        try:
            await self._one("SELECT 1 AS ok", None)
        except (psycopg.Error, OSError):
            return False
        return True

    async def reset(self) -> int | None:
        pool = await self._connected()
        async with pool.connection() as conn:
            cur = await conn.execute("DELETE FROM rate_limits")
            return cur.rowcount

    async def clear(self, key: str) -> None:
        pool = await self._connected()
        async with pool.connection() as conn:
            await conn.execute("DELETE FROM rate_limits WHERE key = %s", (key,))

    async def close(self) -> None:
        """Close the pool this storage opened (never the API's)."""
        if self._own_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _one(self, sql: str, key: str | None) -> dict[str, Any] | None:
        pool = await self._connected()
        async with pool.connection() as conn:
            cur = await conn.execute(sql, (key,) if key is not None else None)
            return await cur.fetchone()
