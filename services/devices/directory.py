"""The device directory of the hot paths: what the pipeline needs to know of a device (model,
owner, active), cached for a few seconds so that a batch costs at most one query."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from services.devices.store import select_infos

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the pipeline needs to know of a device to process its uplinks."""

    id: str
    model: str
    owner_id: int
    active: bool


class DeviceDirectory:
    """A short-lived cache of device model/owner/active for the hot path (TTL in seconds)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self._ttl = ttl
        self._cache: dict[str, tuple[float, DeviceInfo | None]] = {}

    async def lookup(
        self, conn: AsyncConnection[Row], ids: set[str]
    ) -> dict[str, DeviceInfo | None]:
        """Device infos for ``ids`` (None for unknown ids), from cache or one query."""
        now = time.monotonic()
        found: dict[str, DeviceInfo | None] = {}
        missing: list[str] = []
        for device_id in ids:
            hit = self._cache.get(device_id)
            if hit is not None and hit[0] > now:
                found[device_id] = hit[1]
            else:
                missing.append(device_id)
        if missing:
            rows = {row["id"]: row for row in await select_infos(conn, missing)}
            for device_id in missing:
                row = rows.get(device_id)
                info = (
                    None
                    if row is None
                    else DeviceInfo(row["id"], row["model"], row["owner_id"], row["active"])
                )
                self._cache[device_id] = (now + self._ttl, info)
                found[device_id] = info
        return found
