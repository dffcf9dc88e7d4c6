"""Relay state: record a device's state report in ``device_state`` (only a newer one replaces the
stored one) and read it back.

Plain async functions over a psycopg 3 ``AsyncConnection`` (any row factory: they read tuples);
times are Unix seconds (floats) at this boundary and ``timestamptz`` in the database.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from services.readings._sql import fetchone, unix


async def store_state(
    conn: AsyncConnection[Any], device: str, time: float, state: dict[str, Any]
) -> bool:
    """Record a device's state report unless a newer one is stored; True if it was recorded."""
    row = await fetchone(
        conn,
        """
        INSERT INTO device_state (device, time, state) VALUES (%s, to_timestamp(%s), %s)
        ON CONFLICT (device) DO UPDATE SET time = EXCLUDED.time, state = EXCLUDED.state
        WHERE device_state.time < EXCLUDED.time
        RETURNING 1
        """,
        (device, float(time), Jsonb(state)),
    )
    return row is not None


async def latest_state(
    conn: AsyncConnection[Any], device: str
) -> tuple[float, dict[str, Any]] | None:
    """The device's latest state report as ``(time, state)``, or None."""
    row = await fetchone(conn, "SELECT time, state FROM device_state WHERE device = %s", (device,))
    if row is None:
        return None
    return unix(row[0]), dict(row[1])
