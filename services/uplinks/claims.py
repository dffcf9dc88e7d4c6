"""The claims of concurrent callbacks, grouped: one statement for many (a "group commit").

Each uplink callback needs its dedup claim, its device's state and its journal row
(:mod:`services.uplinks.dedup`) before it may be answered. One statement per callback costs a
round trip, a transaction and a WAL flush each: at a few hundred callbacks per second that is
most of what PostgreSQL and the API's database driver spend. :class:`ClaimGroups` sends a
claim at once when a statement slot is free (after ``linger``, to gather the claims of the
callbacks that arrive meanwhile), and otherwise puts it in the next group, which one
statement claims whole when a slot frees up. Every
claim of a group is committed, or none (the statement is one transaction). A group of one
(a rare callback, or ``linger`` 0) uses the single claim's statement: the grouped statement
(unnest, joins) cost PostgreSQL more for one row (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from services.platform import ArrivalRate, Message
from services.uplinks.dedup import CLAIM_UPSERT, claim_checking_device

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]

#: The claims of a group, their devices' state and the journal rows of those claimed for an
#: active device, in one statement (``set_config(..., true)`` is ``SET LOCAL`` for the
#: statement's own transaction: it waits for the WAL flush when ``%(commit)s`` is ``on``).
#: Returns, in input order: claimed, and the device's ``active`` (NULL: unknown device). Each
#: device is read by its key (a subquery per claim): joined, a table of a few thousand devices
#: was read whole for every group (the planner's choice), a quarter of the statement's time.
_CLAIM_GROUP: Final = f"""
WITH commit_mode AS (SELECT set_config('synchronous_commit', %(commit)s, true)),
input AS (
    SELECT u.key, u.device, u.id, u.value, u.ord,
           (SELECT d.active FROM devices d WHERE d.id = u.device) AS active
    FROM unnest(%(keys)b::text[], %(devices)b::text[], %(ids)b::text[], %(values)b::bytea[])
         WITH ORDINALITY AS u(key, device, id, value, ord)
),
claimed AS ({CLAIM_UPSERT.format(source="SELECT key, now() FROM input, commit_mode ORDER BY key")}),
journaled AS (
    INSERT INTO uplink_journal (id, key, value)
    SELECT i.id, i.device, i.value FROM input i JOIN claimed c ON c.key = i.key
    WHERE %(journal)s AND i.active IS TRUE
    ON CONFLICT (id) DO NOTHING
)
SELECT (c.key IS NOT NULL) AS claimed, i.active
FROM input i LEFT JOIN claimed c ON c.key = i.key
ORDER BY i.ord
"""  # noqa: S608 (fixed fragments, no input)


@dataclass(frozen=True, slots=True)
class Claim:
    """One callback's claim: its dedup key, its device and its journal entry (id, message)."""

    key: str
    device: str
    entry: tuple[str, Message]


@dataclass(slots=True)
class _Waiting:
    claim: Claim
    future: asyncio.Future[tuple[bool, bool | None]]


async def claim_group(
    conn: AsyncConnection[Any],
    claims: Sequence[Claim],
    *,
    window_seconds: int,
    journal: bool = True,
    durable: bool = True,
) -> list[tuple[bool, bool | None]]:
    """Claim every key of ``claims`` (distinct keys) in one statement: per claim, in order,
    whether it is new and whether its device is active (None: unknown). The uplinks claimed
    for an active device are journaled (``journal``), durably committed with ``durable``."""
    if not claims:
        return []
    params = {
        "commit": "on" if journal and durable else "off",
        "window": window_seconds,
        "journal": journal,
        "keys": [c.key for c in claims],
        "devices": [c.device for c in claims],
        "ids": [c.entry[0] for c in claims],
        "values": [c.entry[1][1] for c in claims],
    }
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_CLAIM_GROUP, params)
        rows = await cur.fetchall()
    return [(bool(claimed), active) for claimed, active in rows]


@dataclass
class ClaimGroups:
    """Claims of concurrent callbacks, grouped into statements over ``pool``.

    At most ``slots`` statements run at once, each with up to ``max_group`` claims. A key
    claimed twice in one group is claimed once: the second is a duplicate. A failed statement
    fails every claim of its group with its exception (nothing of it was committed).
    """

    pool: Pool
    window_seconds: int
    journal: bool = True
    durable: bool = True
    slots: int = 2
    max_group: int = 256
    timeout: float = 5.0
    #: How long a statement gathers claims before it runs (s), see :meth:`_gather`.
    linger: float = 0.0
    #: A statement stops gathering once this many claims wait.
    enough: int = 16
    _waiting: list[_Waiting] = field(default_factory=list)
    _running: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _gathered: asyncio.Event | None = None
    _arrivals: ArrivalRate = field(default_factory=ArrivalRate)

    async def claim(self, claim: Claim) -> tuple[bool, bool | None]:
        """Whether ``claim`` is new, and whether its device is active (None: unknown)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, bool | None]] = loop.create_future()
        self._waiting.append(_Waiting(claim, future))
        if self.linger > 0:
            self._arrivals.arrived(loop.time())
            if self._gathered is not None and len(self._waiting) >= self.enough:
                self._gathered.set()
        # A statement gathering claims takes this one too: no other starts meanwhile.
        if self._running < self.slots and self._gathered is None:
            self._running += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            await self._gather()
            # Claims that come while another statement gathers are that one's to take.
            while self._waiting and self._gathered is None:
                group = self._waiting[: self.max_group]
                del self._waiting[: self.max_group]
                await self._claim(group)
        finally:
            self._running -= 1

    async def _gather(self) -> None:
        """Before a statement runs: wait up to ``linger`` for ``enough`` claims, when the claims
        of the last second say that more than a few will come meanwhile.

        At a steady rate most claims would otherwise run alone (a round trip, a transaction and
        a WAL flush each). Rare callbacks are not held (nothing would join them), a flood's
        callbacks barely (``enough`` of them come quickly), and a network server that sends
        one callback at a time is held at most until its rate falls below
        ``WORTH / linger``, about 100/s with 40 ms (:mod:`services.platform.arrivals`).
        """
        if len(self._waiting) >= self.enough or not self._arrivals.worth_lingering(self.linger):
            return
        self._gathered = gathered = asyncio.Event()
        try:
            await asyncio.wait_for(gathered.wait(), self.linger)
        except TimeoutError:
            pass
        finally:
            self._gathered = None

    async def _claim(self, group: list[_Waiting]) -> None:
        first: dict[str, _Waiting] = {}
        repeats: list[_Waiting] = []
        for waiting in group:
            if waiting.claim.key in first:
                repeats.append(waiting)
            else:
                first[waiting.claim.key] = waiting
        distinct = list(first.values())
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                if len(distinct) == 1:  # alone: the single claim's statement costs less
                    claim = distinct[0].claim
                    results = [
                        await claim_checking_device(
                            conn,
                            claim.key,
                            self.window_seconds,
                            claim.device,
                            entry=claim.entry if self.journal else None,
                            durable=self.durable,
                        )
                    ]
                else:
                    results = await claim_group(
                        conn,
                        [w.claim for w in distinct],
                        window_seconds=self.window_seconds,
                        journal=self.journal,
                        durable=self.durable,
                    )
        except Exception as exc:
            for waiting in group:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        by_key: dict[str, tuple[bool, bool | None]] = {}
        for waiting, result in zip(distinct, results, strict=True):
            by_key[waiting.claim.key] = result
            if not waiting.future.done():
                waiting.future.set_result(result)
        for waiting in repeats:  # the same uplink twice at once: the first one has it
            if not waiting.future.done():
                waiting.future.set_result((False, by_key[waiting.claim.key][1]))
