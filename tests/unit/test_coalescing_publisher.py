"""services.platform.Coalescing: the publishes of one turn of the event loop, sent as one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import pytest

from services.platform import Coalescing, Message, PublishFailed


class Recording:
    """A publisher that records each call, and fails while ``fail`` is set."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, list[Message]]]] = []
        self.fail = False
        self.release = asyncio.Event()
        self.release.set()

    async def publish(self, topic: str, messages: Sequence[Message]) -> None:
        await self.publish_many([(topic, messages)])

    async def publish_many(self, batches: Iterable[tuple[str, Sequence[Message]]]) -> None:
        self.calls.append([(topic, list(messages)) for topic, messages in batches])
        await self.release.wait()
        if self.fail:
            raise PublishFailed("Kafka did not acknowledge")


async def test_the_publishes_of_one_turn_are_one_call() -> None:
    inner = Recording()
    publisher = Coalescing(inner)
    await asyncio.gather(
        publisher.publish("uplinks", [("a", b"1")]),
        publisher.publish("dead-letter", [("b", b"2")]),
        publisher.publish_many([("uplinks", [("c", b"3")]), ("readings", [("c", b"4")])]),
    )
    assert inner.calls == [
        [
            ("uplinks", [("a", b"1")]),
            ("dead-letter", [("b", b"2")]),
            ("uplinks", [("c", b"3")]),
            ("readings", [("c", b"4")]),
        ]
    ]
    await publisher.publish("uplinks", [("d", b"5")])  # a later turn: a call of its own
    assert inner.calls[1:] == [[("uplinks", [("d", b"5")])]]


async def test_each_caller_returns_once_the_call_has_returned() -> None:
    inner = Recording()
    inner.release.clear()
    publisher = Coalescing(inner)
    waiting = [asyncio.create_task(publisher.publish("uplinks", [(k, b"")])) for k in "ab"]
    await asyncio.sleep(0.01)
    assert len(inner.calls) == 1
    assert not any(task.done() for task in waiting)
    # Published meanwhile: the next call, once the first has returned or not.
    later = asyncio.create_task(publisher.publish("uplinks", [("c", b"")]))
    await asyncio.sleep(0.01)
    assert [len(call) for call in inner.calls] == [2, 1]
    inner.release.set()
    await asyncio.gather(*waiting, later)


async def test_a_failure_reaches_every_caller_of_the_call() -> None:
    inner = Recording()
    inner.fail = True
    publisher = Coalescing(inner)
    results = await asyncio.gather(
        publisher.publish("uplinks", [("a", b"1")]),
        publisher.publish("uplinks", [("b", b"2")]),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [PublishFailed, PublishFailed]
    assert len(inner.calls) == 1
    inner.fail = False
    await publisher.publish("uplinks", [("a", b"1")])  # and the next publish goes through
    assert len(inner.calls) == 2


async def test_a_cancelled_call_cancels_its_callers() -> None:
    inner = Recording()
    inner.release.clear()
    publisher = Coalescing(inner)
    waiting = asyncio.create_task(publisher.publish("uplinks", [("a", b"1")]))
    await asyncio.sleep(0.01)
    for task in list(publisher._sending):  # the process stopping
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
