"""Webhooks in PostgreSQL: registrations (API), the hot path's cached lookup, the retry queue,
and the recent delivery attempts (``migrations/0005_webhooks.sql``).

Everything that must survive a worker restart is here: the retry queue is a table (claimed
with ``FOR UPDATE SKIP LOCKED`` and a lease), and a webhook's health (its run of failures)
is a row, updated in batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from services.accounts import usage
from services.webhooks.delivery import AttemptRecord, Delivery, Hook, Settlement, disable_reason
from services.webhooks.policy import DEFAULT_DISABLE_POLICY, DisablePolicy, EndpointHealth
from services.webhooks.policy import should_disable as policy_should_disable

Row = dict[str, Any]
Conn = AsyncConnection[Row]


class TooManyWebhooks(ValueError):
    """The device has its maximum of webhooks: HTTP 409 ``too_many_webhooks``."""


class WebhookExists(ValueError):
    """The device already has a webhook with this URL: HTTP 409 ``webhook_exists``."""


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


# --- Registrations (the API) -----------------------------------------------------------------


def webhook_body(row: Row) -> dict[str, Any]:
    """A webhook as listed: never its secret."""
    return {
        "id": row["id"],
        "url": row["url"],
        "created": int(row["created"].timestamp()),
        "disabled": row["disabled_at"] is not None,
        "disabled_at": _ts(row["disabled_at"]),
        "disabled_reason": row["disabled_reason"],
        "consecutive_failures": row["consecutive_failures"],
        "failing_since": _ts(row["failing_since"]),
        "failures": row["failures"],
        "last_failure": _ts(row["last_failure"]),
        "last_error": row["last_error"],
        "pending_retries": row["pending_retries"],
    }


_LIST = """
SELECT w.id, w.url, w.created, w.disabled_at, w.disabled_reason, w.consecutive_failures,
       w.failing_since, w.failures, w.last_failure, w.last_error,
       (SELECT count(*) FROM webhook_retries r WHERE r.webhook_id = w.id) AS pending_retries
FROM webhooks w
"""


async def create_webhook(
    conn: Conn, *, device: str, owner_id: int, url: str, secret: str, max_per_device: int
) -> Row:
    """Register a webhook; raises :class:`TooManyWebhooks` or :class:`WebhookExists`.

    Concurrent registrations on one device are serialised (a transaction-level advisory lock),
    so the limit holds.
    """
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('webhooks:' || %s, 0))", (device,)
        )
        cur = await conn.execute(
            "SELECT url FROM webhooks WHERE device = %s AND owner_id = %s", (device, owner_id)
        )
        urls = [row["url"] for row in await cur.fetchall()]
        if url in urls:
            raise WebhookExists(f"device {device} already has a webhook for {url}")
        if len(urls) >= max_per_device:
            raise TooManyWebhooks(
                f"device {device} already has {len(urls)} webhooks (at most {max_per_device})"
            )
        cur = await conn.execute(
            "INSERT INTO webhooks (device, owner_id, url, secret) VALUES (%s, %s, %s, %s)"
            " RETURNING id, url, created",
            (device, owner_id, url, secret),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def list_webhooks(conn: Conn, *, device: str, owner_id: int) -> list[Row]:
    """The device's webhooks registered by its owner, oldest first."""
    cur = await conn.execute(
        _LIST + " WHERE w.device = %s AND w.owner_id = %s ORDER BY w.id", (device, owner_id)
    )
    return await cur.fetchall()


async def get_webhook(conn: Conn, *, webhook_id: int, device: str, owner_id: int) -> Row | None:
    """One webhook of the device's owner, or None."""
    cur = await conn.execute(
        _LIST + " WHERE w.id = %s AND w.device = %s AND w.owner_id = %s",
        (webhook_id, device, owner_id),
    )
    return await cur.fetchone()


async def delete_webhook(conn: Conn, *, webhook_id: int, device: str, owner_id: int) -> bool:
    """Delete a webhook with its queued retries and recorded attempts; False if none."""
    cur = await conn.execute(
        "DELETE FROM webhooks WHERE id = %s AND device = %s AND owner_id = %s RETURNING id",
        (webhook_id, device, owner_id),
    )
    return await cur.fetchone() is not None


def delivery_body(row: Row) -> dict[str, Any]:
    """An attempt as listed."""
    return {
        "id": row["id"],
        "time": row["at"].timestamp(),
        "attempt": row["attempt"],
        "outcome": row["outcome"],
        "result": row["result"],
        "status": row["status"],
        "latency_ms": row["latency_ms"],
        "error": row["error"],
        "message_id": row["message_id"],
    }


async def list_deliveries(
    conn: Conn, *, webhook_id: int, limit: int = 100, before: int | None = None
) -> list[Row]:
    """The webhook's recorded attempts, newest first (``before``: ids below this one)."""
    cur = await conn.execute(
        "SELECT id, at, attempt, outcome, result, status, latency_ms, error, message_id"
        " FROM webhook_deliveries WHERE webhook_id = %s AND (%s::bigint IS NULL OR id < %s)"
        " ORDER BY id DESC LIMIT %s",
        (webhook_id, before, before, limit),
    )
    return await cur.fetchall()


async def schedule_redelivery(conn: Conn, *, webhook_id: int, delivery_id: int) -> Row | None:
    """Queue the point of a recorded attempt again, due now, on a fresh schedule (a retry
    already queued for it is made due with its attempts reset); None when the attempt is not
    the webhook's."""
    cur = await conn.execute(
        "INSERT INTO webhook_retries (webhook_id, device, message_id, body, attempts, due_at)"
        " SELECT d.webhook_id, w.device, d.message_id, d.body, 0, now()"
        " FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
        " WHERE d.id = %s AND d.webhook_id = %s"
        " ON CONFLICT (webhook_id, message_id) DO UPDATE SET due_at = now(), attempts = 0,"
        " last_status = NULL, last_error = NULL"
        " RETURNING id, message_id",
        (delivery_id, webhook_id),
    )
    return await cur.fetchone()


# --- The hot path's lookup ---------------------------------------------------------------------

# Only the device's current owner's webhooks: a device given to another user stops feeding the
# former owner's receivers at once.
_ACTIVE_HOOKS = """
SELECT w.id, w.device, w.url, w.secret, w.owner_id, w.consecutive_failures
FROM webhooks w JOIN devices d ON d.id = w.device AND d.owner_id = w.owner_id
WHERE w.device = ANY(%s) AND w.disabled_at IS NULL
ORDER BY w.id
"""


def _hook(row: Row) -> Hook:
    return Hook(row["id"], row["device"], row["url"], row["secret"], row["owner_id"])


class WebhookDirectory:
    """The worker's cache of device -> active webhooks (``ttl`` seconds; devices without any
    included), and of which webhooks are failing: a batch costs at most one query.

    ``failing`` holds the webhooks whose last known attempt failed: from the database when an
    entry is loaded, then from this process's own attempts (:meth:`note`).
    """

    def __init__(self, ttl: float = 5.0, *, max_entries: int = 200_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, tuple[Hook, ...]]] = {}
        self.failing: set[int] = set()

    async def lookup(self, conn: Conn, devices: Iterable[str]) -> dict[str, tuple[Hook, ...]]:
        """The active webhooks of each device, from the cache or one query."""
        now = time.monotonic()
        found: dict[str, tuple[Hook, ...]] = {}
        missing: list[str] = []
        for device in set(devices):
            entry = self._entries.get(device)
            if entry is not None and entry[0] > now:
                found[device] = entry[1]
            else:
                missing.append(device)
        if not missing:
            return found
        cur = await conn.execute(_ACTIVE_HOOKS, (missing,))
        loaded: dict[str, list[Hook]] = {device: [] for device in missing}
        for row in await cur.fetchall():
            loaded[row["device"]].append(_hook(row))
            if row["consecutive_failures"] > 0:
                self.failing.add(row["id"])
            else:
                self.failing.discard(row["id"])
        if len(self._entries) + len(missing) > self._max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) + len(missing) > self._max_entries:
                self._entries.clear()
        for device, hooks in loaded.items():
            device_hooks = tuple(hooks)
            self._entries[device] = (now + self._ttl, device_hooks)
            found[device] = device_hooks
        return found

    def note(self, settlement: Settlement, disabled: Iterable[tuple[int, str]] = ()) -> None:
        """Learn from a settled batch: which webhooks now fail or recovered, which were
        disabled ((webhook id, device): dropped from the cache, reloaded on next use)."""
        for hook_id, change in settlement.health.items():
            if change.failures:
                self.failing.add(hook_id)
            elif change.reset:
                self.failing.discard(hook_id)
        for hook_id, device in disabled:
            self.failing.discard(hook_id)
            self._entries.pop(device, None)

    def forget(self) -> None:
        """Drop every cached entry."""
        self._entries.clear()


# --- The retry queue -----------------------------------------------------------------------------

_CLAIM = """
WITH due AS (
    SELECT id FROM webhook_retries WHERE due_at <= now() AND webhook_id <> ALL(%s::bigint[])
    ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED
)
UPDATE webhook_retries r SET due_at = now() + make_interval(secs => %s)
FROM due WHERE r.id = due.id
RETURNING r.id, r.webhook_id, r.device, r.message_id, r.body, r.attempts
"""
_CLAIMED_HOOKS = """
SELECT w.id, w.device, w.url, w.secret, w.owner_id, w.disabled_reason,
       w.disabled_at IS NULL AND d.owner_id = w.owner_id AS active
FROM webhooks w JOIN devices d ON d.id = w.device
WHERE w.id = ANY(%s)
"""


async def claim_due_retries(
    conn: Conn, *, limit: int, lease: float, exclude: Collection[int] = ()
) -> tuple[list[Delivery], list[tuple[Delivery, str]]]:
    """Claim up to ``limit`` due retries for ``lease`` seconds (they are due again then, should
    this worker die meanwhile), none of the webhooks in ``exclude`` (those this worker is still
    sending to). Returns the deliveries to attempt, and those of webhooks no longer active with
    the reason (to dead-letter)."""
    cur = await conn.execute(_CLAIM, (list(exclude), limit, lease))
    rows = await cur.fetchall()
    if not rows:
        return [], []
    cur = await conn.execute(_CLAIMED_HOOKS, (list({row["webhook_id"] for row in rows}),))
    hooks = {row["id"]: row for row in await cur.fetchall()}
    ready: list[Delivery] = []
    orphaned: list[tuple[Delivery, str]] = []
    for row in rows:
        hook_row = hooks.get(row["webhook_id"])
        if hook_row is None:
            continue  # deleted meanwhile; its rows go with it
        delivery = Delivery(
            _hook(hook_row),
            row["message_id"],
            row["body"].encode(),
            attempts=row["attempts"],
            queued=True,
        )
        if hook_row["active"]:
            ready.append(delivery)
        else:
            reason = hook_row["disabled_reason"] or "the device has another owner"
            orphaned.append((delivery, f"webhook disabled ({reason})"))
    return ready, orphaned


# --- Writing a settled batch ---------------------------------------------------------------------

_INSERT_RECORDS = """
INSERT INTO webhook_deliveries
    (webhook_id, at, attempt, outcome, result, status, latency_ms, error, message_id, body)
SELECT v.* FROM unnest(%s::bigint[], %s::timestamptz[], %s::int[], %s::text[], %s::text[],
                       %s::int[], %s::real[], %s::text[], %s::text[], %s::text[])
    AS v(webhook_id, at, attempt, outcome, result, status, latency_ms, error, message_id, body)
WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.id = v.webhook_id)
"""
# A row already queued keeps the larger attempt count (a replayed fresh attempt does not reset
# a point's schedule) and takes the new due time only with it.
_UPSERT_RETRIES = """
INSERT INTO webhook_retries AS r
    (webhook_id, device, message_id, body, attempts, due_at, last_status, last_error)
SELECT v.webhook_id, v.device, v.message_id, v.body, v.attempts,
       now() + make_interval(secs => v.delay), v.last_status, v.last_error
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::int[], %s::float8[],
            %s::int[], %s::text[])
    AS v(webhook_id, device, message_id, body, attempts, delay, last_status, last_error)
WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.id = v.webhook_id)
ON CONFLICT (webhook_id, message_id) DO UPDATE SET
    attempts = GREATEST(r.attempts, EXCLUDED.attempts),
    due_at = CASE WHEN EXCLUDED.attempts >= r.attempts THEN EXCLUDED.due_at ELSE r.due_at END,
    last_status = COALESCE(EXCLUDED.last_status, r.last_status),
    last_error = COALESCE(EXCLUDED.last_error, r.last_error)
"""
_DELETE_FINISHED = """
DELETE FROM webhook_retries r USING unnest(%s::bigint[], %s::text[]) AS f(webhook_id, message_id)
WHERE r.webhook_id = f.webhook_id AND r.message_id = f.message_id
"""
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


_COPY_RECORDS = """
COPY webhook_deliveries
    (webhook_id, at, attempt, outcome, result, status, latency_ms, error, message_id, body)
FROM STDIN
"""


async def insert_records(conn: Conn, records: Sequence[AttemptRecord]) -> None:
    """Insert attempts with ``COPY`` (about 5 times the rows/s of a multi-row insert); when a
    webhook was deleted meanwhile, again with an insert that skips its attempts."""
    if not records:
        return
    try:
        async with conn.transaction(), conn.cursor().copy(_COPY_RECORDS) as copy:
            for x in records:
                await copy.write_row(
                    (
                        x.webhook_id,
                        _dt(x.at),
                        x.attempt,
                        x.outcome,
                        x.result,
                        x.status,
                        x.latency_ms,
                        x.error,
                        x.message_id,
                        x.body,
                    )
                )
        return
    except errors.ForeignKeyViolation:
        pass
    r = records
    await conn.execute(
        _INSERT_RECORDS,
        (
            [x.webhook_id for x in r],
            [_dt(x.at) for x in r],
            [x.attempt for x in r],
            [x.outcome for x in r],
            [x.result for x in r],
            [x.status for x in r],
            [x.latency_ms for x in r],
            [x.error for x in r],
            [x.message_id for x in r],
            [x.body for x in r],
        ),
    )


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
            q = s.retries
            await conn.execute(
                _UPSERT_RETRIES,
                (
                    [x.webhook_id for x in q],
                    [x.device for x in q],
                    [x.message_id for x in q],
                    [x.body for x in q],
                    [x.attempts for x in q],
                    [float(x.delay) for x in q],
                    [x.last_status for x in q],
                    [x.last_error for x in q],
                ),
            )
        if s.finished:
            await conn.execute(
                _DELETE_FINISHED, ([k[0] for k in s.finished], [k[1] for k in s.finished])
            )
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
                    [_dt(x.failing_since) for x in h],
                    [x.failed for x in h],
                    [_dt(x.last_failure) for x in h],
                    [x.last_error for x in h],
                ),
            )
            for row in await cur.fetchall():
                if row["disabled_at"] is not None or row["id"] in reasons:
                    continue
                state = EndpointHealth(row["consecutive_failures"], _ts(row["failing_since"]))
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


class AttemptLog:
    """Attempts waiting to be written to ``webhook_deliveries``, in bulk, off the delivery
    path: :meth:`add` buffers, :meth:`flush` writes everything in one statement (call it every
    fraction of a second, and at shutdown). Past ``max_backlog`` rows, :meth:`add` callers
    should flush before going on (:attr:`full`), so a slow database slows deliveries down
    rather than filling the memory. A crash loses what was buffered: the log is a record for
    people; what delivering depends on (the retry queue, health) is written at once.
    """

    def __init__(self, *, max_backlog: int = 50_000) -> None:
        self._buffer: list[AttemptRecord] = []
        self._max_backlog = max_backlog
        self._lock = asyncio.Lock()
        #: Webhooks with attempts written since the last :meth:`take_written`.
        self._written: set[int] = set()

    def add(self, records: Iterable[AttemptRecord]) -> None:
        self._buffer.extend(records)

    @property
    def backlog(self) -> int:
        return len(self._buffer)

    @property
    def full(self) -> bool:
        return len(self._buffer) >= self._max_backlog

    async def flush(self, conn: Conn) -> int:
        """Write the buffered attempts; on a database error they stay buffered."""
        async with self._lock:
            batch, self._buffer = self._buffer, []
            try:
                await insert_records(conn, batch)
            except BaseException:
                self._buffer[:0] = batch
                raise
            self._written.update(record.webhook_id for record in batch)
            return len(batch)

    def take_written(self) -> set[int]:
        """The webhooks written to since the last call (to prune)."""
        written, self._written = self._written, set()
        return written


# --- Housekeeping --------------------------------------------------------------------------------

_TRIM = """
DELETE FROM webhook_deliveries d
USING (
    SELECT h.id AS webhook_id,
           (SELECT x.id FROM webhook_deliveries x WHERE x.webhook_id = h.id
            ORDER BY x.id DESC OFFSET %s LIMIT 1) AS cutoff
    FROM unnest(%s::bigint[]) AS h(id)
) c
WHERE d.webhook_id = c.webhook_id AND d.id <= c.cutoff
"""


async def prune_deliveries(conn: Conn, *, webhook_ids: Sequence[int], keep: int, days: int) -> int:
    """Keep the newest ``keep`` attempts of each of ``webhook_ids`` (those written to since the
    last pruning), and no attempt older than ``days`` days; returns the rows deleted."""
    deleted = 0
    if webhook_ids:
        cur = await conn.execute(_TRIM, (keep, sorted(webhook_ids)))
        deleted += cur.rowcount
    cur = await conn.execute(
        "DELETE FROM webhook_deliveries WHERE at < now() - make_interval(days => %s)", (days,)
    )
    return deleted + cur.rowcount


async def drop_former_owners_webhooks(conn: Conn) -> int:
    """Delete the webhooks of devices given to another user since they were registered."""
    cur = await conn.execute(
        "DELETE FROM webhooks w USING devices d WHERE d.id = w.device AND d.owner_id <> w.owner_id"
    )
    return cur.rowcount


# --- The delivery path's port (delivery.DeliveryStore) -------------------------------------------


class PgDeliveryStore:
    """:class:`services.webhooks.delivery.DeliveryStore` on a connection pool."""

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
