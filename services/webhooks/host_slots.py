"""Per-host request slots for the HTTP sender: a semaphore per host name, so that a slow
receiver queues its own deliveries without holding the slots other hosts need.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(slots=True)
class Slot:
    """A host's semaphore, and how many requests hold or wait for it."""

    semaphore: asyncio.Semaphore
    users: int = 0


class HostSlots:
    """A semaphore per host name, created on first use and dropped when nobody holds it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, Slot] = {}

    def acquire(self, host: str) -> Slot:
        slot = self._slots.get(host)
        if slot is None:
            slot = self._slots[host] = Slot(asyncio.Semaphore(self._limit))
        slot.users += 1
        return slot

    def release(self, host: str, slot: Slot) -> None:
        slot.users -= 1
        if slot.users == 0 and self._slots.get(host) is slot:
            del self._slots[host]

    def __len__(self) -> int:
        return len(self._slots)
