"""The per-account limiter on the ``limits`` memory storage, and the headers middleware."""

from __future__ import annotations

import time
from typing import Any

import pytest

from api.ratelimit import STATE_KEY, AccountLimiter, RateLimitHeaders, Window, storage_uri


def test_storage_uri() -> None:
    assert storage_uri("memory://") == "async+memory://"
    assert storage_uri("redis://127.0.0.1:6379/0") == "async+redis://127.0.0.1:6379/0"
    assert storage_uri("async+redis://h") == "async+redis://h"


async def test_minute_window_then_refused() -> None:
    limiter = AccountLimiter("memory://", per_minute=3, per_day=100)
    decisions = [await limiter.hit(1) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    windows = [d.window for d in decisions]
    assert all(w is not None for w in windows)
    assert [w.remaining for w in windows if w] == [2, 1, 0, 0]
    assert all(w.limit == 3 for w in windows if w)
    refused = windows[3]
    assert refused is not None
    assert time.time() < refused.reset <= time.time() + 60
    assert 1 <= refused.retry_after() <= 60


async def test_accounts_are_separate_and_overrides_apply() -> None:
    limiter = AccountLimiter("memory://", per_minute=1, per_day=100)
    assert (await limiter.hit(1)).allowed
    assert not (await limiter.hit(1)).allowed
    assert (await limiter.hit(2)).allowed
    # The account's own limit replaces the default.
    assert (await limiter.hit(3, per_minute=2)).allowed
    assert (await limiter.hit(3, per_minute=2)).allowed
    assert not (await limiter.hit(3, per_minute=2)).allowed


async def test_day_window_and_refusals_by_the_minute_do_not_spend_the_day() -> None:
    limiter = AccountLimiter("memory://", per_minute=2, per_day=3)
    first, second, third = [await limiter.hit(7) for _ in range(3)]
    assert first.allowed
    assert second.allowed
    assert not third.allowed
    assert third.window is not None
    assert third.window.limit == 2
    # Two allowed so far: one left for the day, as the headers say.
    assert second.window is not None
    assert second.window.limit == 2
    other = AccountLimiter("memory://", per_minute=10, per_day=2)
    a, b, c = [await other.hit(8) for _ in range(3)]
    assert a.window is not None
    assert a.window.limit == 2
    assert not c.allowed
    assert c.window is not None
    assert c.window.limit == 2
    assert c.window.retry_after() > 3600


async def test_storage_failure_lets_requests_through() -> None:
    limiter = AccountLimiter("memory://", per_minute=1, per_day=1)

    class Broken:
        async def incr(self, *args: Any, **kwargs: Any) -> int:
            raise ConnectionError("redis down")

    limiter._storage = Broken()  # type: ignore[assignment]
    decision = await limiter.hit(1)
    assert decision.allowed
    assert decision.window is None


def test_window_headers() -> None:
    window = Window(limit=60, remaining=5, reset=1700000000.2)
    assert window.headers() == [
        (b"x-ratelimit-limit", b"60"),
        (b"x-ratelimit-remaining", b"5"),
        (b"x-ratelimit-reset", b"1700000001"),
    ]
    assert window.retry_after(now=1700000000.2 - 10.5) == 11
    assert window.retry_after(now=1700000001) == 1


@pytest.mark.parametrize("counted", [True, False])
async def test_middleware_adds_headers_to_counted_requests(counted: bool) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if counted:
            scope["state"][STATE_KEY] = Window(limit=60, remaining=59, reset=1700000000)
        await send({"type": "http.response.start", "status": 404, "headers": [(b"a", b"b")]})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await RateLimitHeaders(app)({"type": "http"}, receive, send)
    headers = dict(sent[0]["headers"])
    assert headers[b"a"] == b"b"
    if counted:
        assert headers[b"x-ratelimit-limit"] == b"60"
        assert headers[b"x-ratelimit-remaining"] == b"59"
        assert headers[b"x-ratelimit-reset"] == b"1700000000"
    else:
        assert b"x-ratelimit-limit" not in headers
