"""A callback's work is bounded by ``callback_deadline`` (``ingest.http.common.bounded``): its
result within it; after it a 503 ``pipeline_timeout``, while the work goes on to its end (never
cancelled: a claim half-made must be finished or released). No I/O."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest

from api import ApiContext, ApiError
from ingest.http.common import bounded


def context(deadline: float) -> ApiContext:
    return cast(ApiContext, SimpleNamespace(settings=SimpleNamespace(callback_deadline=deadline)))


async def test_the_result_within_the_deadline() -> None:
    async def work() -> str:
        await asyncio.sleep(0.01)
        return "accepted"

    assert await bounded(context(1.0), work()) == "accepted"
    # Nothing left behind: no task, no timer.
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_an_error_of_the_work_is_raised() -> None:
    async def work() -> None:
        raise LookupError("the database said no")

    with pytest.raises(LookupError, match="said no"):
        await bounded(context(1.0), work())


async def test_past_the_deadline_a_503_and_the_work_goes_on(caplog: Any) -> None:
    finished = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(0.2)
        finished.set()
        raise RuntimeError("failed late")

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ApiError) as raised:
        await bounded(context(0.05), work())
    assert raised.value.status == 503
    assert raised.value.code == "pipeline_timeout"
    assert 0.04 <= loop.time() - started < 0.15
    with caplog.at_level(logging.WARNING, logger="ingest.http.common"):
        await asyncio.wait_for(finished.wait(), 1.0)
        await asyncio.sleep(0.01)
    assert "answered 503 for its deadline then failed" in caplog.text
    assert "failed late" in caplog.text


async def test_a_cancelled_caller_leaves_the_work_running() -> None:
    finished = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    caller = asyncio.create_task(bounded(context(1.0), work()))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(finished.wait(), 1.0)
