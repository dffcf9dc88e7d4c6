"""take_bursts: a batch leaves when its burst ends (not on a fixed tick), and the Faust loop
that stream.transport mirrors is the one it was written against."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import pytest
from faust.transport import consumer as faust_consumer

from stream.batching import take_bursts

Batches = list[tuple[float, list[Any]]]


async def run_agent(
    feed: Callable[[Any], Awaitable[None]],
    *,
    max_: int = 10,
    within: float,
    quiet: float,
    ack: bool = True,
    settle: float = 0.3,
) -> Batches:
    """Run an agent that collects ``take_bursts`` batches while ``feed(agent)`` puts values."""
    app = faust.App("test-bursts", store="memory://", web_enabled=False)
    batches: Batches = []

    @app.agent()
    async def collect(stream: Any) -> None:
        async for batch in take_bursts(stream, max_, within=within, quiet=quiet, ack=ack):
            batches.append((time.monotonic(), list(batch)))

    async with collect.test_context() as agent:
        await feed(agent)
        await asyncio.sleep(settle)
    return batches


async def test_a_burst_leaves_once_it_is_quiet_not_after_within() -> None:
    started = 0.0

    async def feed(agent: Any) -> None:
        nonlocal started
        started = time.monotonic()
        for i in range(3):
            await agent.put(i)

    batches = await run_agent(feed, within=5.0, quiet=0.02, settle=0.5)
    assert [values for _, values in batches] == [[0, 1, 2]]
    # Faust's take would have held it for `within` (5 s).
    assert batches[0][0] - started < 0.4


async def test_values_that_keep_coming_are_cut_by_within() -> None:
    async def feed(agent: Any) -> None:
        for i in range(40):  # one every 10 ms: never quiet for 50 ms
            await agent.put(i)
            await asyncio.sleep(0.01)

    batches = await run_agent(feed, max_=1000, within=0.1, quiet=0.05)
    values = [v for _, batch in batches for v in batch]
    assert values == list(range(40))
    assert len(batches) >= 2, batches


async def test_a_full_buffer_leaves_at_once_and_never_holds_more_than_max() -> None:
    async def feed(agent: Any) -> None:
        for i in range(25):
            await agent.put(i)

    batches = await run_agent(feed, max_=10, within=5.0, quiet=1.0, settle=1.5)
    assert [len(values) for _, values in batches] == [10, 10, 5]
    assert [v for _, batch in batches for v in batch] == list(range(25))


async def test_without_ack_the_events_are_yielded() -> None:
    async def feed(agent: Any) -> None:
        await agent.put("a")

    batches = await run_agent(feed, within=5.0, quiet=0.02, ack=False)
    ((_, events),) = batches
    assert [event.value for event in events] == ["a"]


async def test_a_batch_whose_body_did_not_finish_is_not_acknowledged() -> None:
    """A worker stopped (SIGTERM, leaving its group) while it stores a batch: the agent is
    cancelled inside the body, the generator is closed, and the batch's events must stay
    unacknowledged, or their offsets are committed and whoever takes the partition next skips
    them (Faust's own ``take`` acknowledges them in a ``finally``; a CI run of the scale-out
    test lost an accepted uplink so until the journal's replay)."""
    app = faust.App("test-bursts-ack", store="memory://", web_enabled=False)
    acked: list[Any] = []
    storing = asyncio.Event()

    @app.agent()
    async def store(stream: Any) -> None:
        real_ack = stream.ack

        async def ack(event: Any) -> bool:
            acked.append(event.value)
            return bool(await real_ack(event))

        stream.ack = ack
        async for batch in take_bursts(stream, 10, within=5.0, quiet=0.02):
            if "stuck" in batch:
                storing.set()
                await asyncio.Event().wait()  # the database does not answer; then the stop

    async with store.test_context() as agent:
        for value in (1, 2, 3):
            await agent.put(value)
        await asyncio.sleep(0.2)  # stored; acknowledged when the body moves on
        await agent.put("stuck")
        await asyncio.wait_for(storing.wait(), 5)
    await asyncio.sleep(0.2)  # the closed generator's clean-up has run
    assert acked == [1, 2, 3]


def test_the_mirrored_faust_loop_is_unchanged() -> None:
    """stream.transport._Consumer._drain_messages mirrors Faust's (racing a suspension once per
    fetched batch instead of per record): a Faust whose loop differs must be read first."""
    source = inspect.getsource(faust_consumer.Consumer._drain_messages)
    digest = hashlib.sha256(source.encode()).hexdigest()
    if digest != "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417":
        pytest.fail(
            f"faust {faust.__version__} changed Consumer._drain_messages: compare it with "
            "stream/transport.py's copy, then update this digest"
        )
