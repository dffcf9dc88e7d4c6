"""The API's services at shutdown: with the database away, the last flush of ``last_used`` and
the usage counters gives up after :data:`api.lifespan.SHUTDOWN_FLUSH_TIMEOUT`, not after the
pool's 30 s, so the process exits before a supervisor's SIGKILL (``hivepipe up``: 20 s)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api import ApiContext, lifespan
from services.entrypoints.embedded import free_port
from services.platform import Settings


class _NoPublisher:
    async def publish(self, topic: str, messages: Any) -> None:
        raise AssertionError("nothing is published at shutdown")


async def test_the_shutdown_flush_gives_up_soon_when_the_database_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lifespan, "SHUTDOWN_FLUSH_TIMEOUT", 0.5)
    # A port nothing listens on: every connection attempt is refused.
    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        f"postgresql://hivepipe@127.0.0.1:{free_port()}/hivepipe", min_size=1, open=False
    )
    await pool.open(wait=False)
    ctx = ApiContext(settings=Settings(mqtt_url=""), pool=pool, publisher=_NoPublisher())  # type: ignore[arg-type]
    try:
        await lifespan.start_api_services(ctx)
        [close] = ctx.closers
        started = time.monotonic()
        await close()  # logs that the flush failed; does not raise
        elapsed = time.monotonic() - started
    finally:
        await pool.close(timeout=0)
    assert elapsed < 5.0, f"the shutdown flush waited {elapsed:.1f} s for a connection"
    assert elapsed >= 0.4, "the flush did try to get a connection"


async def test_a_stuck_shutdown_step_is_abandoned_with_where_it_waited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from services.entrypoints.api_app import shutdown_step

    never = asyncio.Event()

    async def stuck_close() -> None:
        await never.wait()

    started = time.monotonic()
    with caplog.at_level(logging.ERROR):
        ended = await shutdown_step("a stuck closer", stuck_close(), within=0.2)
    assert not ended
    assert time.monotonic() - started < 2.0
    [record] = caplog.records
    assert "a stuck closer still running after" in record.getMessage()
    assert "stuck_close" in record.getMessage()  # the stack names where it waited
    assert "never.wait()" in record.getMessage()


async def test_a_failing_shutdown_step_is_logged_and_the_next_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from services.entrypoints.api_app import shutdown_step

    async def broken() -> None:
        raise RuntimeError("boom")

    async def fine() -> None:
        await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR):
        assert await shutdown_step("broken", broken())
        assert await shutdown_step("fine", fine())
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["shutdown: broken failed: RuntimeError('boom')"]
