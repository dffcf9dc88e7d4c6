"""Device events: stored for ``GET /v1/devices/{id}/events``, idempotent on replay."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg import AsyncConnection

from services.platform import DeviceEvent

Row = dict[str, Any]

_INSERT = """
INSERT INTO device_events (device, time, type, data, dedup_key)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::jsonb[], %s::text[])
ON CONFLICT (dedup_key) DO NOTHING
"""


async def store_events(
    conn: AsyncConnection[Row], events: Sequence[tuple[DeviceEvent, str | None]]
) -> int:
    """Store (event, dedup key) pairs in one statement; a replayed key is stored once."""
    if not events:
        return 0
    cur = await conn.execute(
        _INSERT,
        (
            [e.device for e, _ in events],
            [datetime.fromtimestamp(e.time, UTC) for e, _ in events],
            [e.type for e, _ in events],
            [orjson.dumps(e.data).decode() for e, _ in events],
            [key for _, key in events],
        ),
    )
    return cur.rowcount


async def query_events(
    conn: AsyncConnection[Row],
    device: str,
    *,
    start: float | None = None,
    end: float | None = None,
    types: Sequence[str] | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """A device's events, newest first, as ``{"device", "time", "type", ...data}``."""
    clauses = ["device = %s"]
    params: list[Any] = [device]
    if start is not None:
        clauses.append("time >= %s")
        params.append(datetime.fromtimestamp(start, UTC))
    if end is not None:
        clauses.append("time <= %s")
        params.append(datetime.fromtimestamp(end, UTC))
    if types:
        clauses.append("type = ANY(%s)")
        params.append(list(types))
    params.append(limit)
    cur = await conn.execute(
        "SELECT device, time, type, data FROM device_events WHERE "  # noqa: S608 (fixed clauses)
        + " AND ".join(clauses)
        + " ORDER BY time DESC, id DESC LIMIT %s",
        params,
    )
    return [
        {
            **row["data"],
            "device": row["device"],
            "time": row["time"].timestamp(),
            "type": row["type"],
        }
        for row in await cur.fetchall()
    ]
