"""Lanes: work keyed by (webhook, device) run in submission order per key, concurrently across
keys, so that a receiver sees a device's points in order even when batches overlap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

_T = TypeVar("_T")


class Lanes:
    """Runs work keyed by (webhook, device): work with one key runs after the work submitted
    before it with that key (so a device's points reach a webhook in order, across batches),
    and work with different keys runs concurrently.

    With ``wait``, work waits that long at most for its predecessors; then ``on_timeout()`` is
    its result instead (the caller sends those points through the retry queue), and the work
    after it waits for the same predecessors: a receiver still busy with a device's earlier
    points never holds a batch longer than ``wait``."""

    def __init__(self) -> None:
        self._tails: dict[tuple[int, str], asyncio.Future[None]] = {}

    def submit(
        self,
        key: tuple[int, str],
        work: Callable[[], Awaitable[_T]],
        *,
        wait: float | None = None,
        on_timeout: Callable[[], _T] | None = None,
    ) -> asyncio.Task[_T]:
        """Start ``work`` once the work submitted before with ``key`` is over (however it
        ended), or give up after ``wait`` seconds (see the class)."""
        loop = asyncio.get_running_loop()
        before = self._tails.get(key)
        done: asyncio.Future[None] = loop.create_future()
        self._tails[key] = done
        gave_up = False

        async def run() -> _T:
            nonlocal gave_up
            if before is not None:
                if wait is None or on_timeout is None:
                    await asyncio.shield(before)
                else:
                    try:
                        await asyncio.wait_for(asyncio.shield(before), wait)
                    except TimeoutError:
                        gave_up = True
                        return on_timeout()
            return await work()

        def finish() -> None:
            if not done.done():
                done.set_result(None)
            if self._tails.get(key) is done:
                del self._tails[key]

        def release(_: asyncio.Task[_T]) -> None:
            # A callback, not a ``finally``: it runs even for a task cancelled before it began.
            if gave_up and before is not None and not before.done():
                before.add_done_callback(lambda _: finish())  # the next waits for the same
            else:
                finish()

        task = loop.create_task(run())
        task.add_done_callback(release)
        return task

    def __len__(self) -> int:
        return len(self._tails)
