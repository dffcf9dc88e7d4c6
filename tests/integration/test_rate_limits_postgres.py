"""Rate-limit counters in PostgreSQL (``rate_limits``), shared by several API processes: the
``limits`` storage on the real PostgreSQL, and the API counting through it."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.ratelimit import AccountLimiter
from services.accounts import PostgresStorage, uses_own_database
from services.accounts.users import set_limits
from services.platform import connection_kwargs
from tests.api_support import api_on_new_schema, connect, make_account


async def _pool(url: str) -> AsyncConnectionPool[psycopg.AsyncConnection[dict[str, object]]]:
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, object]]] = AsyncConnectionPool(
        url, min_size=1, max_size=4, open=False, kwargs=connection_kwargs()
    )
    await pool.open(wait=True)
    return pool


def test_postgresql_without_a_host_names_hivepipes_own_database() -> None:
    assert uses_own_database("postgresql://")
    assert uses_own_database("async+postgres://")
    assert not uses_own_database("postgresql://db.example/hivepipe")
    assert not uses_own_database("memory://")
    assert not uses_own_database("redis://127.0.0.1:6379")


async def test_two_processes_hitting_at_once_get_exactly_the_limit(migrated_url: str) -> None:
    # Two pools and two limiters: two API processes. 40 requests at once, 5 per minute.
    pools = [await _pool(migrated_url), await _pool(migrated_url)]
    try:
        limiters = [
            AccountLimiter(PostgresStorage(pool=pool), per_minute=5, per_day=1000) for pool in pools
        ]
        decisions = await asyncio.gather(*(limiters[i % 2].hit(7) for i in range(40)))
        assert sum(d.allowed for d in decisions) == 5
        windows = [d.window for d in decisions if d.window is not None]
        assert len(windows) == 40
        assert sorted(w.remaining for w in windows if w.remaining) == [1, 2, 3, 4]
        # One window for everyone, ending a minute after the first hit (PostgreSQL's clock).
        assert len({round(w.reset, 3) for w in windows}) == 1
        assert time.time() + 55 < windows[0].reset <= time.time() + 61
        assert 1 <= windows[-1].retry_after() <= 60
        # Another account, and the day window: refused minutes did not count against the day.
        assert (await limiters[0].hit(8)).allowed
        async with await connect(migrated_url) as conn:
            rows = await (await conn.execute("SELECT key, count FROM rate_limits")).fetchall()
        counts = {tuple(str(row["key"]).split("/")[1:]): row["count"] for row in rows}
        assert counts == {
            ("7", "5", "1", "minute"): 40,
            ("7", "1000", "1", "day"): 5,
            ("8", "5", "1", "minute"): 1,
            ("8", "1000", "1", "day"): 1,
        }
    finally:
        for pool in pools:
            await pool.close()


async def test_a_window_starts_over_once_it_has_ended(migrated_url: str) -> None:
    pool = await _pool(migrated_url)
    try:
        storage = PostgresStorage(pool=pool)
        key = f"test/{uuid.uuid4().hex}"
        first = await storage.hit(key, 1)
        assert (await storage.hit(key, 1))[0] == 2
        assert await storage.get(key) == 2
        assert await storage.get_expiry(key) == first[1]
        await asyncio.sleep(1.1)
        assert await storage.get(key) == 0  # ended: nothing counted
        count, ends = await storage.hit(key, 1)
        assert (count, ends > first[1]) == (1, True)
        assert await storage.check()
        await storage.clear(key)
        assert await storage.get(key) == 0
    finally:
        await pool.close()


async def test_a_full_url_opens_a_pool_of_its_own(migrated_url: str) -> None:
    limiter = AccountLimiter(migrated_url, per_minute=2, per_day=10)  # through limits' registry
    try:
        assert [(await limiter.hit(1)).allowed for _ in range(3)] == [True, True, False]
        assert await limiter._storage.reset() == 2
    finally:
        await limiter.close()


async def test_the_api_counts_in_postgresql(
    pg_server: str, kafka_server: str, tmp_path: Path
) -> None:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path, rate_limit_storage="postgresql://"
    ) as api:
        account = await make_account(api.database_url, scopes=("read-only",))
        async with await connect(api.database_url) as conn:
            await set_limits(conn, username=account.username, per_minute=3, per_day=None)
        answers = [await api.client.get("/v1/devices", headers=account.headers) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        async with await psycopg.AsyncConnection.connect(
            api.database_url, row_factory=dict_row
        ) as conn:
            cur = await conn.execute("SELECT count FROM rate_limits WHERE key LIKE '%%/minute'")
            assert [row["count"] for row in await cur.fetchall()] == [4]
