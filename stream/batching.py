"""Batches that leave when their burst ends, not on a fixed tick.

Faust's ``Stream.take(max_, within)`` yields its buffer every ``within`` seconds (or when it
holds ``max_``). The consumer receives records in bursts, one per fetch (every fetch wait with
tansu), so a batch sat in that buffer for up to ``within`` after its burst had arrived: at a
steady 500 uplinks/s that was half of the callback → stored latency (issue #16).

:func:`take_bursts` yields as soon as no value has arrived for ``quiet`` seconds, ``within``
after the batch's first value at the latest, or at ``max_`` values. Under a flood values keep
arriving, so batches still fill to ``max_`` or ``within``; at a steady rate each fetch's burst
is stored on its own, a few milliseconds after it arrived. While the buffer is empty it sleeps
until a value comes (no idle ticks).

The buffering is Faust's own (a processor on the stream, acks turned off while it runs, the
same back-pressure): only the moment a batch leaves differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from mode.utils.aiter import aiter
from mode.utils.futures import notify


async def take_bursts(
    stream: Any, max_: int, *, within: float, quiet: float, ack: bool = True
) -> AsyncIterator[list[Any]]:
    """Buffer ``stream``'s values and yield them in batches (see the module's text).

    ``ack`` True: yields values, and acknowledges their events when the body moves on (as
    ``take``, except that a body that raises or is cancelled acknowledges nothing). False:
    yields the events themselves, which the body acknowledges (as ``noack_take``).
    """
    buffer: list[Any] = []
    events: list[Any] = []
    full = asyncio.Event()
    consumed = asyncio.Event()
    nonempty = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    first_at = last_at = 0.0
    clock = time.monotonic
    enable_acks: bool = stream.enable_acks

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming, first_at, last_at
        try:
            if consuming is not None:  # the body holds the buffer: wait until it is done
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_bursts found current_event is None")
            last_at = clock()
            if not buffer:
                first_at = last_at
                nonempty.set()
            buffer.append(value if ack else event)
            events.append(event)
            if len(buffer) >= max_:
                full.set()
                # Strict: the body must take these before one more value is buffered.
                consumed.clear()
                await stream.wait(consumed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not buffer:
                nonempty.clear()
                await stream.wait_for_stopped(nonempty)
                continue
            now = clock()
            left = min(quiet - (now - last_at), within - (now - first_at))
            if len(buffer) < max_ and left > 0:
                await stream.wait_for_stopped(full, timeout=left)
                continue
            consuming = asyncio.get_running_loop().create_future()
            moved_on = False
            try:
                yield list(buffer)
                moved_on = True
            finally:
                buffer.clear()
                # Only a body that moved on has done its work. One that raised or was cancelled
                # (a worker stopping mid-store) leaves its events unacknowledged: their offsets
                # are not committed, and the partition's next reader takes them again. Faust's
                # ``take`` acknowledges them here whatever happened, so they were skipped.
                if ack and moved_on:
                    for event in events:
                        await stream.ack(event)
                events.clear()
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
