"""Publishes made in one turn of the event loop, sent as one.

The API's uplink callbacks are claimed in groups (services/uplinks/claims.py): a group's
callbacks resume together, in one turn of the event loop, and each then publishes its uplink
and waits for Kafka's acknowledgement. :class:`Coalescing` hands what they publish in that turn
to the publisher beneath as one ``publish_many``: one deadline, one wait for the
acknowledgements, one pass through the topic checks, for the group instead of per callback.
What reaches Kafka is the same (the producer batches the messages anyway).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from services.platform.kafka import Message, Publisher

Batches = list[tuple[str, Sequence[Message]]]


class Coalescing:
    """A :class:`Publisher` over ``publisher``: the publishes made in one turn of the event
    loop go to it as one ``publish_many``, after the turn. Each caller returns once that has
    returned, or gets its exception: the messages of a turn are acknowledged together or
    reported failed together (at-least-once: a caller told of a failure publishes again, so
    the messages that had reached the broker may be there twice)."""

    def __init__(self, publisher: Publisher) -> None:
        self._inner = publisher
        self._pending: list[tuple[Batches, asyncio.Future[None]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        await self.publish_many([(topic, messages)])

    async def publish_many(self, batches: Iterable[tuple[str, Sequence[Message]]]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((list(batches), done))
        if len(self._pending) == 1:
            loop.call_soon(self._send_pending)
        await done

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(pending))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, pending: list[tuple[Batches, asyncio.Future[None]]]) -> None:
        try:
            await self._inner.publish_many([batch for batches, _ in pending for batch in batches])
        except asyncio.CancelledError:  # the process stopping: so are its callers
            for _, done in pending:
                done.cancel()
            raise
        except Exception as exc:
            for _, done in pending:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in pending:
            if not done.done():
                done.set_result(None)
