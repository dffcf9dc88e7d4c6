"""Webhook registrations in PostgreSQL, for the API: create (within the device's limit), list,
get and delete a device's webhooks; and drop the webhooks of a device's former owners.
"""

from __future__ import annotations

from typing import Any

from services.devices import CURRENT_OWNERS
from services.webhooks.rows import Conn, Row, ts


class TooManyWebhooks(ValueError):
    """The device has its maximum of webhooks: HTTP 409 ``too_many_webhooks``."""


class WebhookExists(ValueError):
    """The device already has a webhook with this URL: HTTP 409 ``webhook_exists``."""


def webhook_body(row: Row) -> dict[str, Any]:
    """A webhook as listed: never its secret."""
    return {
        "id": row["id"],
        "url": row["url"],
        "created": int(row["created"].timestamp()),
        "disabled": row["disabled_at"] is not None,
        "disabled_at": ts(row["disabled_at"]),
        "disabled_reason": row["disabled_reason"],
        "consecutive_failures": row["consecutive_failures"],
        "failing_since": ts(row["failing_since"]),
        "failures": row["failures"],
        "last_failure": ts(row["last_failure"]),
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


_DROP_FORMER_OWNERS = f"""
DELETE FROM webhooks w USING ({CURRENT_OWNERS}) d
WHERE d.id = w.device AND d.owner_id <> w.owner_id
"""  # noqa: S608 (a fixed fragment, no input)


async def drop_former_owners_webhooks(conn: Conn) -> int:
    """Delete the webhooks of devices given to another user since they were registered."""
    cur = await conn.execute(_DROP_FORMER_OWNERS)
    return cur.rowcount
