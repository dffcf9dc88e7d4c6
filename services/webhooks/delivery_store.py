"""The webhook delivery store on PostgreSQL: :class:`PgDeliveryStore`, the
:class:`services.webhooks.ports.DeliveryStore` port on a connection pool, and the writing of a
settled batch (the retry queue, the webhooks' health, disabling) in one transaction.

Everything that must survive a worker restart is written at once: the retry queue is a table
(:mod:`services.webhooks.retry_queue`), and a webhook's health (its run of failures) is a row,
updated in batches. The attempts are buffered by the :class:`AttemptLog`.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Container, Mapping, Sequence

from psycopg_pool import AsyncConnectionPool

from services.accounts import usage
from services.webhooks.attempts import AttemptLog, prune_deliveries
from services.webhooks.directory import WebhookDirectory
from services.webhooks.model import Delivery, Hook, Settlement
from services.webhooks.policy import DEFAULT_DISABLE_POLICY, DisablePolicy, EndpointHealth
from services.webhooks.policy import should_disable as policy_should_disable
from services.webhooks.registrations import drop_former_owners_webhooks
from services.webhooks.retry_queue import claim_due_retries, queue_retries, remove_finished
from services.webhooks.rows import Conn, dt, ts
from services.webhooks.settlement import disable_reason

# Only webhooks with something to change are written: a healthy webhook's deliveries cost no
# write here.
_UPDATE_HEALTH = """
UPDATE webhooks w SET
    consecutive_failures = CASE WHEN v.reset THEN v.failures
                                ELSE w.consecutive_failures + v.failures END,
    failing_since = CASE WHEN v.reset THEN v.since ELSE COALESCE(w.failing_since, v.since) END,
    failures = w.failures + v.failed,
    last_failure = COALESCE(v.last_failure, w.last_failure),
    last_error = COALESCE(v.last_error, w.last_error)
FROM unnest(%s::bigint[], %s::bool[], %s::int[], %s::timestamptz[], %s::int[],
            %s::timestamptz[], %s::text[])
    AS v(id, reset, failures, since, failed, last_failure, last_error)
WHERE w.id = v.id AND (v.failed > 0 OR w.consecutive_failures > 0 OR w.failing_since IS NOT NULL)
RETURNING w.id, w.device, w.consecutive_failures, w.failing_since, w.last_error, w.disabled_at
"""
_DISABLE = """
UPDATE webhooks w SET disabled_at = now(), disabled_reason = v.reason
FROM unnest(%s::bigint[], %s::text[]) AS v(id, reason)
WHERE w.id = v.id AND w.disabled_at IS NULL
RETURNING w.id, w.device
"""


async def persist_settlement(
    conn: Conn,
    settlement: Settlement,
    *,
    failing: Container[int] = frozenset(),
    disable_policy: DisablePolicy = DEFAULT_DISABLE_POLICY,
    now: float | None = None,
) -> list[tuple[int, str]]:
    """Write what a settled batch changes, in one transaction: the retry queue, the health of
    the webhooks that failed, were retried, or were known to be ``failing``; disable the
    webhooks that answered 410 or failed for too long. Returns the webhooks disabled, as
    (id, device).

    The attempts themselves (``settlement.records``) are not written here: see
    :class:`AttemptLog`. A batch where every point was delivered to a healthy webhook writes
    nothing. Safe to run again after a failure (rows of deleted webhooks are skipped).
    """
    now = time.time() if now is None else now
    s = settlement
    disabled: list[tuple[int, str]] = []
    health = {
        hook_id: change
        for hook_id, change in s.health.items()
        if change.must_write or hook_id in failing
    }
    if not (s.retries or s.finished or health or s.gone):
        return disabled
    async with conn.transaction():
        if s.retries:
            await queue_retries(conn, s.retries)
        if s.finished:
            await remove_finished(conn, s.finished)
        reasons = dict(s.gone)
        if health:
            ids = sorted(health)  # one lock order for every writer
            h = [health[i] for i in ids]
            cur = await conn.execute(
                _UPDATE_HEALTH,
                (
                    ids,
                    [x.reset for x in h],
                    [x.failures for x in h],
                    [dt(x.failing_since) for x in h],
                    [x.failed for x in h],
                    [dt(x.last_failure) for x in h],
                    [x.last_error for x in h],
                ),
            )
            for row in await cur.fetchall():
                if row["disabled_at"] is not None or row["id"] in reasons:
                    continue
                state = EndpointHealth(row["consecutive_failures"], ts(row["failing_since"]))
                if state.failing_since is not None and policy_should_disable(
                    state, now=now, policy=disable_policy
                ):
                    reasons[row["id"]] = disable_reason(
                        consecutive_failures=state.consecutive_failures,
                        failing_since=state.failing_since,
                        last_error=row["last_error"],
                    )
        if reasons:
            ids = sorted(reasons)
            cur = await conn.execute(_DISABLE, (ids, [reasons[i] for i in ids]))
            disabled = [(row["id"], row["device"]) for row in await cur.fetchall()]
    return disabled


class PgDeliveryStore:
    """:class:`services.webhooks.ports.DeliveryStore` on a connection pool."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        *,
        directory: WebhookDirectory | None = None,
        disable_policy: DisablePolicy = DEFAULT_DISABLE_POLICY,
    ) -> None:
        self._pool = pool
        self.directory = directory if directory is not None else WebhookDirectory()
        self._disable_policy = disable_policy
        self.log = AttemptLog()

    @property
    def failing(self) -> Container[int]:
        return self.directory.failing

    async def active_hooks(self, devices: set[str]) -> Mapping[str, Sequence[Hook]]:
        async with self._pool.connection() as conn:
            return await self.directory.lookup(conn, devices)

    async def claim_retries(
        self, *, limit: int, lease: float, exclude: Collection[int] = ()
    ) -> tuple[list[Delivery], list[tuple[Delivery, str]]]:
        async with self._pool.connection() as conn:
            return await claim_due_retries(conn, limit=limit, lease=lease, exclude=exclude)

    async def persist(self, settlement: Settlement) -> list[tuple[int, str]]:
        async with self._pool.connection() as conn:
            disabled = await persist_settlement(
                conn,
                settlement,
                failing=self.directory.failing,
                disable_policy=self._disable_policy,
            )
            self.directory.note(settlement, disabled)
            self.log.add(settlement.records)
            settlement.records = []  # logged once, even if this batch is written again
            if self.log.full:
                await self.log.flush(conn)
        return disabled

    async def flush_log(self) -> int:
        """Write the buffered attempts."""
        if not self.log.backlog:
            return 0
        async with self._pool.connection() as conn:
            return await self.log.flush(conn)

    async def flush_usage(self) -> None:
        """Write this process's usage counters (deliveries among them)."""
        async with self._pool.connection() as conn:
            await usage.flush(conn)

    async def housekeeping(self, *, keep: int, days: int) -> int:
        """Prune the recorded attempts; delete the webhooks of former owners."""
        written = self.log.take_written()
        async with self._pool.connection() as conn:
            pruned = await prune_deliveries(conn, webhook_ids=list(written), keep=keep, days=days)
            await drop_former_owners_webhooks(conn)
        return pruned
