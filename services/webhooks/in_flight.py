"""Batches in flight: a bound on the webhook batches the worker runs at once, each running on
its own (a slow receiver's batch does not hold up the others).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

# The logger keeps the name it had before delivering was split into modules (log filters).
log = logging.getLogger(__name__)


class InFlight:
    """Runs up to ``limit`` pieces of work at a time; :meth:`submit` waits for room. A piece
    that raises is logged (it must handle what it can: here, retry until done)."""

    def __init__(self, limit: int = 8) -> None:
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, work: Callable[[], Awaitable[None]]) -> None:
        while len(self._tasks) >= self._limit:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

        async def run() -> None:
            await work()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a webhook batch failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the work in flight."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def cancel(self) -> None:
        """Cancel the work in flight."""
        for task in self._tasks:
            task.cancel()

    def __len__(self) -> int:
        return len(self._tasks)
