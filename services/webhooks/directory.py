"""The delivery worker's directory of webhooks: device -> active webhooks, cached for a few
seconds, and which webhooks are failing.

The cache is invalidated through the database: the ``webhook_directory`` row's generation moves
with every change that can change where a device's points go (a webhook registered, deleted,
disabled or edited, a device deleted or given to another owner: triggers of
``migrations/0010_webhook_directory.sql``, in the change's own transaction). Each lookup reads
it first and drops the whole cache when it moved, so a change committed before a point was
stored is in effect for that point, in every worker. A batch costs one small read, plus one
query for the devices not cached.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from services.devices import CURRENT_OWNERS
from services.webhooks.model import Hook, Settlement
from services.webhooks.rows import Conn, hook_from_row

# Only the device's current owner's webhooks: a device given to another user stops feeding the
# former owner's receivers at once.
_ACTIVE_HOOKS = f"""
SELECT w.id, w.device, w.url, w.secret, w.owner_id, w.consecutive_failures
FROM webhooks w JOIN ({CURRENT_OWNERS}) d ON d.id = w.device AND d.owner_id = w.owner_id
WHERE w.device = ANY(%s) AND w.disabled_at IS NULL
ORDER BY w.id
"""  # noqa: S608 (a fixed fragment, no input)
_GENERATION = "SELECT generation FROM webhook_directory"


class WebhookDirectory:
    """The worker's cache of device -> active webhooks (``ttl`` seconds at most; devices
    without any included), and of which webhooks are failing: a batch costs one read of the
    generation, and one query when a device is not cached.

    ``failing`` holds the webhooks whose last known attempt failed: from the database when an
    entry is loaded, then from this process's own attempts (:meth:`note`).
    """

    def __init__(self, ttl: float = 5.0, *, max_entries: int = 200_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, tuple[Hook, ...]]] = {}
        self._generation: int | None = None
        self.failing: set[int] = set()

    async def lookup(self, conn: Conn, devices: Iterable[str]) -> dict[str, tuple[Hook, ...]]:
        """The active webhooks of each device, as of this call: the cache holds only what no
        change committed before this call has touched."""
        # Read before the webhooks: a change committed in between is loaded with the old
        # generation, and dropped again by the next lookup (never the other way round).
        cur = await conn.execute(_GENERATION)
        row = await cur.fetchone()
        generation = None if row is None else int(row["generation"])
        if generation is None or generation != self._generation:
            self._entries.clear()
            self._generation = generation
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
            loaded[row["device"]].append(hook_from_row(row))
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
