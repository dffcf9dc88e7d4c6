"""What the webhook store modules share: the row and connection types, timestamp conversions,
and a :class:`Hook` read from its ``webhooks`` row (``migrations/0005_webhooks.sql``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from services.webhooks.model import Hook

Row = dict[str, Any]
Conn = AsyncConnection[Row]


def ts(value: datetime | None) -> float | None:
    """A ``timestamptz`` as Unix time."""
    return None if value is None else value.timestamp()


def dt(value: float | None) -> datetime | None:
    """Unix time as a ``timestamptz`` (UTC)."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


def hook_from_row(row: Row) -> Hook:
    """The :class:`Hook` of a ``webhooks`` row (``id, device, url, secret, owner_id``)."""
    return Hook(row["id"], row["device"], row["url"], row["secret"], row["owner_id"])
