"""Per-account rate limits (the ``limits`` library) and the ``X-RateLimit-*`` headers.

An account (an integrator with its users, or a standalone user) has two fixed windows: per
minute and per day (defaults from settings, raised per account in ``users.rate_per_*``). The
counters live in the ``limits`` storage of ``HIVEPIPE_RATE_LIMIT_STORAGE``: process memory for
one API process, and for several sharing the load either hivepipe's PostgreSQL
(``postgresql://``, the ``rate_limits`` table: what ``hivepipe up`` uses when it runs several
API processes) or Redis (``redis://host:6379``).

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
from typing import Any

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.storage import storage_from_string
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.accounts import PostgresStorage, uses_own_database

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


def open_storage(
    setting: str, *, pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]] | None = None
) -> Storage:
    """The async ``limits`` storage of ``HIVEPIPE_RATE_LIMIT_STORAGE``; ``postgresql://``
    alone counts in hivepipe's database through ``pool`` (the API process's)."""
    if uses_own_database(setting):
        assert pool is not None, "postgresql:// counts in the API's database: a pool is required"
        return PostgresStorage(pool=pool)
    uri = storage_uri(setting)
    options: dict[str, str] = {"implementation": "redispy"} if "redis" in uri else {}
    store = storage_from_string(uri, **options)
    assert isinstance(store, Storage), "an async storage is required"
    return store


class AccountLimiter:
    """Fixed windows per account: a minute and a day, each counted in the ``limits`` storage
    (given, or named by its ``HIVEPIPE_RATE_LIMIT_STORAGE`` URI)."""

    def __init__(self, storage: str | Storage, *, per_minute: int, per_day: int) -> None:
        self._storage = open_storage(storage) if isinstance(storage, str) else storage
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
        if isinstance(self._storage, PostgresStorage):  # the count and the end in one round trip
            count, reset = await self._storage.hit(key, item.get_expiry())
        else:
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

    async def close(self) -> None:
        """Close what the storage opened itself (a PostgreSQL pool of its own)."""
        if isinstance(self._storage, PostgresStorage):
            await self._storage.close()


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
