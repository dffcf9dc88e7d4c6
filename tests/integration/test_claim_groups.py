"""Grouped claims (services/uplinks/claims.py) against real PostgreSQL: concurrent callbacks share
statements, and each still gets exactly the answer its own statement would have given: new or
duplicate, its device's state, and its journal row only when claimed for an active device."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from services.platform.db import open_pool
from services.platform.events import UplinkEnvelope
from services.uplinks import Claim, ClaimGroups, journal
from tests.integration.ingest_support import register_devices


def _claim(device: str, seq: int) -> Claim:
    envelope = UplinkEnvelope(
        source="sigfox",
        device=device,
        received=1700000000.0 + seq,
        payload_hex="010f08fc0906",
        meta={"seq": seq},
    )
    return Claim(f"sigfox:{device}:{seq}", device, journal.journal_entry(envelope))


async def _journaled(url: str, ids: list[str]) -> set[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT id FROM uplink_journal WHERE id = ANY(%s)", (ids,))
        return {row[0] for row in await cur.fetchall()}


class CountingPool:
    """The real pool, counting the connections taken (one per statement of claims)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.taken = 0

    def connection(self, timeout: float | None = None) -> Any:
        self.taken += 1
        return self.pool.connection(timeout=timeout)


async def test_concurrent_claims_share_statements_and_keep_their_answers(migrated_url: str) -> None:
    register_devices(migrated_url, [("C60001", "orbit-t", True), ("C60002", "orbit-t", False)])
    pool = await open_pool(migrated_url, size=4)
    counting = CountingPool(pool)
    groups = ClaimGroups(counting, window_seconds=600, slots=2)  # type: ignore[arg-type]
    try:
        claims = [_claim("C60001", seq) for seq in range(200)]
        inactive = _claim("C60002", 1)
        unknown = _claim("C60FFF", 1)
        everything = [*claims, claims[5], inactive, unknown]  # claims[5] twice at once
        results = await asyncio.gather(*(groups.claim(c) for c in everything))
        # 203 claims in far fewer statements: two at once, the rest grouped behind them.
        assert counting.taken < 20, counting.taken
        assert results[:200] == [(True, True)] * 200
        assert results[200] == (False, True)  # the repeat is a duplicate of the first
        assert results[201] == (True, False)  # inactive device: claimed, not journaled
        assert results[202] == (True, None)  # unknown device
        ids = [c.entry[0] for c in everything]
        assert await _journaled(migrated_url, ids) == {c.entry[0] for c in claims}
        # The same uplinks again: all duplicates now, one statement each group.
        again = await asyncio.gather(*(groups.claim(c) for c in claims[:10]))
        assert again == [(False, True)] * 10
    finally:
        await pool.close()


async def test_a_failed_statement_fails_every_claim_of_its_group(migrated_url: str) -> None:
    pool = await open_pool(migrated_url, size=1)
    groups = ClaimGroups(pool, window_seconds=600, slots=1)
    await pool.close()  # every statement now fails
    claims = [_claim("C60003", seq) for seq in range(5)]
    results = await asyncio.gather(*(groups.claim(c) for c in claims), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results), results
    with pytest.raises(Exception):  # noqa: B017,PT011 (the pool's own error type)
        await groups.claim(_claim("C60003", 9))


async def test_with_a_linger_claims_that_arrive_one_by_one_share_a_statement(
    migrated_url: str,
) -> None:
    """At a steady rate a claim usually finds a slot free and would run alone; the linger
    gathers the ones arriving meanwhile into its statement. Rare claims are not held."""
    register_devices(migrated_url, [("C60004", "orbit-t", True)])
    pool = await open_pool(migrated_url, size=4)
    counting = CountingPool(pool)
    groups = ClaimGroups(counting, window_seconds=600, slots=2, linger=0.2)  # type: ignore[arg-type]

    async def arriving(groups: ClaimGroups, seq: int, every: float, base: int = 0) -> float:
        await asyncio.sleep(seq * every)
        started = time.perf_counter()
        assert await groups.claim(_claim("C60004", base + seq)) == (True, True)
        return time.perf_counter() - started

    try:
        # 100 claims a second for 0.6 s: the rate that makes a linger worth it.
        await asyncio.gather(*(arriving(groups, seq, 0.01) for seq in range(60)))
        assert counting.taken < 60, counting.taken  # grouped once the rate is known
        counting.taken = 0
        await asyncio.gather(*(arriving(groups, seq, 0.01, 100) for seq in range(8)))
        assert counting.taken == 1, counting.taken
        # Rare claims (4 a few hundred ms apart, a new process): one statement each, not held.
        rare = ClaimGroups(counting, window_seconds=600, slots=2, linger=0.2)  # type: ignore[arg-type]
        counting.taken = 0
        waits = await asyncio.gather(*(arriving(rare, seq, 0.3, 200) for seq in range(4)))
        assert counting.taken == 4, counting.taken
        assert max(waits) < 0.15, waits
    finally:
        await pool.close()
