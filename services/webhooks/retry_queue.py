"""The webhook retry queue in PostgreSQL (``webhook_retries``): due points claimed with
``FOR UPDATE SKIP LOCKED`` and a lease, so the queue survives a worker restart and is shared by
every worker; points queued or rescheduled, finished ones removed; and a recorded attempt's
point queued again on request (redelivery); the backlog an operator watches.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from services.devices import CURRENT_OWNERS
from services.webhooks.model import Delivery, RetryRow
from services.webhooks.rows import Conn, Row, hook_from_row

_CLAIM = """
WITH due AS (
    SELECT id FROM webhook_retries WHERE due_at <= now() AND webhook_id <> ALL(%s::bigint[])
    ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED
)
UPDATE webhook_retries r SET due_at = now() + make_interval(secs => %s)
FROM due WHERE r.id = due.id
RETURNING r.id, r.webhook_id, r.device, r.message_id, r.body, r.attempts
"""
_CLAIMED_HOOKS = f"""
SELECT w.id, w.device, w.url, w.secret, w.owner_id, w.disabled_reason,
       w.disabled_at IS NULL AND d.owner_id = w.owner_id AS active
FROM webhooks w JOIN ({CURRENT_OWNERS}) d ON d.id = w.device
WHERE w.id = ANY(%s)
"""  # noqa: S608 (a fixed fragment, no input)


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
            hook_from_row(hook_row),
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


async def queue_retries(conn: Conn, retries: Sequence[RetryRow]) -> None:
    """Queue the points of ``retries``, or reschedule those already queued (rows of deleted
    webhooks are skipped)."""
    await conn.execute(
        _UPSERT_RETRIES,
        (
            [x.webhook_id for x in retries],
            [x.device for x in retries],
            [x.message_id for x in retries],
            [x.body for x in retries],
            [x.attempts for x in retries],
            [float(x.delay) for x in retries],
            [x.last_status for x in retries],
            [x.last_error for x in retries],
        ),
    )


async def remove_finished(conn: Conn, finished: Sequence[tuple[int, str]]) -> None:
    """Remove the queued points done with, given as (webhook id, message id)."""
    await conn.execute(_DELETE_FINISHED, ([k[0] for k in finished], [k[1] for k in finished]))


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


@dataclass(frozen=True, slots=True)
class RetryBacklog:
    """The retry queue at a glance: points waiting for another attempt, how many of them are
    due now, and how long the oldest has waited (s; 0 when the queue is empty)."""

    points: int
    due: int
    oldest_seconds: float


async def retry_backlog(conn: Conn) -> RetryBacklog:
    """The retry queue's :class:`RetryBacklog` (one scan of ``webhook_retries``)."""
    cur = await conn.execute(
        "SELECT count(*) AS points, count(*) FILTER (WHERE due_at <= now()) AS due,"
        " coalesce(extract(epoch FROM now() - min(queued)), 0)::float8 AS oldest"
        " FROM webhook_retries"
    )
    row = await cur.fetchone()
    assert row is not None
    return RetryBacklog(int(row["points"]), int(row["due"]), float(row["oldest"]))
