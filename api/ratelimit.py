"""Per-account rate limits (the ``limits`` library) and the ``X-RateLimit-*`` headers.

An account (an integrator with its users, or a standalone user) has two fixed windows: per
minute and per day (defaults from settings, raised per account in ``users.rate_per_*``). The
counters live in the ``limits`` storage of ``HIVEPIPE_RATE_LIMIT_STORAGE``: process memory for
one API process (the embedded mode), Redis (``redis://host:6379``) when several share the load.

Only authenticated requests are counted (the check runs in the auth dependency, so callbacks,
``/healthz``, ``/readyz``, ``/metrics`` and the docs are never limited). The headers describe
the window closest to its limit; a 429 names the one exceeded. When the storage fails, requests
are let through (logged): an outage of Redis must not take the API down.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

#: Key of the request-scoped state (``request.state``) holding this request's :class:`Window`.
STATE_KEY = "ratelimit"


@dataclass(frozen=True, slots=True)
class Window:
    """One window's figures after a hit."""

    limit: int
    remaining: int
    #: Unix time at which the window resets.
    reset: float

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(math.ceil(self.reset)).encode()),
        ]

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until the window resets (at least 1)."""
        return max(1, math.ceil(self.reset - (time.time() if now is None else now)))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    window: Window | None


def storage_uri(setting: str) -> str:
    """``memory://`` or ``redis://...`` as the async storage URI of ``limits``."""
    return setting if setting.startswith("async+") else f"async+{setting}"


class AccountLimiter:
    """Fixed windows per account: a minute and a day, each counted in the ``limits`` storage."""

    def __init__(self, storage: str, *, per_minute: int, per_day: int) -> None:
        uri = storage_uri(storage)
        options: dict[str, str] = {"implementation": "redispy"} if "redis" in uri else {}
        store = storage_from_string(uri, **options)
        assert isinstance(store, Storage), "an async storage is required"
        self._storage = store
        self._per_minute = per_minute
        self._per_day = per_day
        self._items: dict[tuple[str, int], RateLimitItem] = {}
        self._last_error_log = 0.0

    def _item(self, period: str, amount: int) -> RateLimitItem:
        item = self._items.get((period, amount))
        if item is None:
            cls = RateLimitItemPerMinute if period == "minute" else RateLimitItemPerDay
            item = self._items[(period, amount)] = cls(amount, namespace="hivepipe")
        return item

    async def _hit(self, item: RateLimitItem, account: str) -> tuple[bool, Window]:
        key = item.key_for(account)
        count = await self._storage.incr(key, item.get_expiry())
        reset = await self._storage.get_expiry(key)
        window = Window(limit=item.amount, remaining=max(0, item.amount - count), reset=reset)
        return count <= item.amount, window

    async def hit(
        self, account_id: int, *, per_minute: int | None = None, per_day: int | None = None
    ) -> Decision:
        """Count one request of the account; the minute window first, the day only if allowed.

        A request refused by the minute window does not consume the day's quota.
        """
        account = str(account_id)
        try:
            ok, minute = await self._hit(
                self._item("minute", per_minute or self._per_minute), account
            )
            if not ok:
                return Decision(allowed=False, window=minute)
            ok, day = await self._hit(self._item("day", per_day or self._per_day), account)
        except Exception:
            now = time.monotonic()
            if now - self._last_error_log > 60:
                self._last_error_log = now
                log.exception("rate-limit storage failed: requests are let through")
            return Decision(allowed=True, window=None)
        if not ok:
            return Decision(allowed=False, window=day)
        return Decision(allowed=True, window=minute if minute.remaining <= day.remaining else day)

    async def reset(self) -> None:
        """Forget every counter (tests)."""
        await self._storage.reset()


class RateLimitHeaders:
    """ASGI middleware: adds ``X-RateLimit-*`` to a response whose request was counted.

    The auth dependency leaves the request's :class:`Window` in the request state; errors
    raised after it (404, 429, ...) get the headers too, which a dependency alone cannot do.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                window = state.get(STATE_KEY)
                if isinstance(window, Window):
                    message["headers"] = [*message.get("headers", ()), *window.headers()]
            await send(message)

        await self.app(scope, receive, send_with_headers)
